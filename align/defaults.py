"""Defaults shared across tokalign, importable without torch (the CLI starts fast)."""

from __future__ import annotations

import math

DEFAULT_LM = "smollm2-135m"
INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOGIT_SCALE = math.log(100.0)  # the logit scale is clamped here after every step
