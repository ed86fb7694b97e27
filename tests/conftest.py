import os
import sys
import warnings

# Tests must never reach a hub: every model is built from its config class.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
