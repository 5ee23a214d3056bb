"""Deprecated alias of ``edgetl.quant`` (quantization split by job in 0.1.x): import from ``edgetl.quant`` instead."""

import warnings

from edgetl.config import QATConfig  # noqa: F401
from edgetl.quant.fold import INPUT_NORM_LAYER, PIXEL_RANGE, InputFold, input_fold  # noqa: F401
from edgetl.quant.layers import HardSigmoid, HardSwish  # noqa: F401
from edgetl.quant.qat import (EAGER_STEPS, QATResult, calibrate_ranges, load_qat_model,  # noqa: F401
                              quantize_aware_finetune, read_qat_result)
from edgetl.quant.rewrite import prepare_for_quantization  # noqa: F401
from edgetl.quant.scheme import FixedRangeOutputQuantizeConfig, qat_scope, quantize  # noqa: F401
from edgetl.run_dir import RunPaths as _RunPaths

QAT_MODEL_FILE = _RunPaths.QAT_MODEL
QAT_RESULT_FILE = _RunPaths.QAT_RESULT

warnings.warn("edgetl.qat is deprecated: import from edgetl.quant (edgetl.quant.qat, .scheme, .rewrite, .fold).",
              FutureWarning, stacklevel=2)
