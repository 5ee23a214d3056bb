"""The Keras Applications backbones edgetl ships (MobileNet v1/v2/v3, EfficientNet B0-B3, EfficientNetV2 B0-B2): ``BACKBONES``.

``edgetl.model.registry`` registers them; this module does not import
TensorFlow (the Keras builders are looked up by name when a model is built).
To add a backbone, add a ``BackboneSpec`` to the table. Weight
file names are Keras' own cache names, so a file copied from another
machine's ``~/.keras/models`` works as an offline weights directory, and the
origins are the URLs Keras downloads them from (tf_keras 2.21's
``applications`` modules).
"""

from __future__ import annotations

from typing import List, Optional


from edgetl.model.spec import INTERNAL_PREPROCESSING, MOBILENET_PREPROCESSING, BackboneSpec


def _mobilenet_v1_file(alpha: Optional[float], size: int) -> str:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0"}.get(alpha, "2_5")
    rows = size if size in (128, 160, 192, 224) else 224
    return f"mobilenet_{alpha_text}_{rows}_tf_no_top.h5"


def _mobilenet_v2_file(alpha: Optional[float], size: int) -> str:
    rows = size if size in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def _mobilenet_v3_file(model_type: str, minimalistic: bool):
    def weights_file(alpha: Optional[float], size: int) -> str:
        suffix = "_minimalistic" if minimalistic else ""
        return f"weights_mobilenet_v3_{model_type}{suffix}_224_{alpha}_float_no_top_v2.h5"

    return weights_file


def _efficientnet_file(keras_model_name: str):
    return lambda alpha, size: f"{keras_model_name}_notop.h5"


_KERAS_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"

_backbones: List[BackboneSpec] = []


_backbones.append(BackboneSpec(
    name="mobilenet_v1", keras_name="MobileNet", family="mobilenet",
    default_size=224, min_size=32, imagenet_sizes=(128, 160, 192, 224),
    alphas=(0.25, 0.5, 0.75, 1.0), imagenet_alphas=(0.25, 0.5, 0.75, 1.0), default_alpha=1.0,
    preprocessing=MOBILENET_PREPROCESSING, weights_file=_mobilenet_v1_file, edgetpu_compatible=True,
    weights_origin=_KERAS_APPLICATIONS + "mobilenet/",
    description="Plain depthwise-separable stack; every op maps to the Edge TPU; fastest on old Pis.",
))
_backbones.append(BackboneSpec(
    name="mobilenet_v2", keras_name="MobileNetV2", family="mobilenet",
    default_size=224, min_size=32, imagenet_sizes=(96, 128, 160, 192, 224),
    alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
    default_alpha=1.0, preprocessing=MOBILENET_PREPROCESSING, weights_file=_mobilenet_v2_file,
    edgetpu_compatible=True, weights_origin=_KERAS_APPLICATIONS + "mobilenet_v2/",
    description="Inverted residuals with ReLU6; the safe default for int8 and the Edge TPU.",
))
for _type in ("small", "large"):
    for _minimal in (False, True):
        _backbones.append(BackboneSpec(
            name=f"mobilenet_v3_{_type}" + ("_minimalistic" if _minimal else ""),
            keras_name=f"MobileNetV3{_type.capitalize()}", family="mobilenet_v3",
            default_size=224, min_size=32, imagenet_sizes=(224,),
            alphas=(0.75, 1.0), imagenet_alphas=(1.0,) if _minimal else (0.75, 1.0), default_alpha=1.0,
            preprocessing=INTERNAL_PREPROCESSING, weights_file=_mobilenet_v3_file(_type, _minimal),
            builder_kwargs={"minimalistic": _minimal, "include_preprocessing": True},
            weights_origin=_KERAS_APPLICATIONS + "mobilenet_v3/",
            edgetpu_compatible=_minimal,
            description=(
                "No hard-swish or squeeze-excite: Edge TPU friendly." if _minimal
                else "Hard-swish and squeeze-excite: accurate per MAC, heavier int8 ops."
            ),
        ))

for _index, _size in enumerate((224, 240, 260, 300)):
    _backbones.append(BackboneSpec(
        name=f"efficientnet_b{_index}", keras_name=f"EfficientNetB{_index}", family="efficientnet",
        default_size=_size, min_size=32, imagenet_sizes=(_size,), alphas=(), imagenet_alphas=(),
        default_alpha=None, preprocessing=INTERNAL_PREPROCESSING,
        weights_file=_efficientnet_file(f"efficientnetb{_index}"),
        weights_origin="https://storage.googleapis.com/keras-applications/",
        # Swish is LOGISTIC x MUL and squeeze-excite MEAN / MUL in the int8 file: all in Coral's op list.
        edgetpu_compatible=True,
        description="Swish + squeeze-excite; most accurate per parameter, slower int8 on CPUs.",
    ))

for _index, _size in enumerate((224, 240, 260)):
    _backbones.append(BackboneSpec(
        name=f"efficientnet_v2_b{_index}", keras_name=f"EfficientNetV2B{_index}", family="efficientnet_v2",
        default_size=_size, min_size=32, imagenet_sizes=(_size,), alphas=(), imagenet_alphas=(),
        default_alpha=None, preprocessing=INTERNAL_PREPROCESSING,
        weights_file=_efficientnet_file(f"efficientnetv2-b{_index}"),
        weights_origin=_KERAS_APPLICATIONS + "efficientnet_v2/",
        builder_kwargs={"include_preprocessing": True},
        edgetpu_compatible=True,  # as EfficientNet; the per-channel input normalisation is a DEPTHWISE_CONV_2D
        description="Fused-MBConv early stages; trains fast, good accuracy per latency on big cores.",
    ))

BACKBONES = tuple(_backbones)
