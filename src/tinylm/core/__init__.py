"""What the CLI and the pipeline share: the verbs (commands.py), the glue that turns a verb's options into a
checked call (options.py), and the main job's stages with their inputs and outputs (stages.py)."""

from .commands import COMMANDS, GROUPS, Command, load_command
from .options import Call, bind_command, call_command, command_parser, option_errors, parse_command
from .stages import STAGES, Stage

__all__ = [
    "COMMANDS",
    "GROUPS",
    "STAGES",
    "Call",
    "Command",
    "Stage",
    "bind_command",
    "call_command",
    "command_parser",
    "load_command",
    "option_errors",
    "parse_command",
]
