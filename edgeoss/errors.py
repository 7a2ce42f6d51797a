"""The errors a user can cause (bad paths, bad checkpoints, bad arguments): the CLI prints
their message on one line, without a traceback."""

from .config import ConfigError
from .convert import ConvertError
from .convert.checkpoint import CheckpointError
from .convert.vocab import VocabError
from .format import FormatError
from .hub import HubError
from .planner import MemoryBudgetError
from .routing_trace import TraceError
from .safetensors_io import SafetensorsError

USER_ERRORS = (ConfigError, ConvertError, CheckpointError, VocabError, FormatError, HubError,
               SafetensorsError, MemoryBudgetError, TraceError, FileExistsError, FileNotFoundError, PermissionError, ValueError)
