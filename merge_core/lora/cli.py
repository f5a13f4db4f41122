"""`python -m merge_core lora ...`: one sub-command group; merging/baking and extraction add their own."""
from . import cli_extract, cli_merge


def add_parsers(sub) -> None:
    lora = sub.add_parser("lora", help="merge, bake in, extract and inspect LoRAs (see `lora --help`)",
                          description="LoRA tools (SPEC 13).")
    actions = lora.add_subparsers(dest="lora_command", required=True)
    cli_merge.add_parsers(actions)
    cli_extract.add_parsers(actions)
