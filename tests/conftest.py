import os
import sys
import warnings

# Tests must never reach a hub: every model is built from its config class.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")

# Hypothesis profiles: "ci" (default, fast) and "slow" (TARGETSEL_PROFILE=slow: the figures the
# README reports — ≥ 10,000 property examples, ≥ 100,000 fuzzed queries).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "slow", max_examples=10_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "explore", max_examples=int(os.environ.get("TARGETSEL_EXAMPLES", "500")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("TARGETSEL_PROFILE", "ci"))
