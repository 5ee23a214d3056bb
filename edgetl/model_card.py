"""Deprecated alias of ``edgetl.model_metadata`` (the embedded entry is model metadata, not a model card): import from there."""

import warnings

from edgetl.model_metadata import *  # noqa: F401,F403
from edgetl.model_metadata import (EdgetlMetadata as ModelCard, METADATA_FORMAT as CARD_FORMAT,  # noqa: F401
                                   embed_edgetl_metadata as embed_card, read_edgetl_metadata as read_card)

warnings.warn("edgetl.model_card is deprecated: import from edgetl.model_metadata (ModelCard is now EdgetlMetadata, "
              "read_card read_edgetl_metadata).", FutureWarning, stacklevel=2)
