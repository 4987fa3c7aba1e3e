"""``mmoe-card``: regenerate the model card and plots of an existing output folder, and optionally push it.

Examples::

    mmoe-card --output_dir outputs/mustard-minilm
    mmoe-card --output_dir outputs/mustard-minilm --push_to_hub --hub_model_id my-org/mmoe-minilm-mustard \\
        --hub_private_repo

Only the allowlisted root files of the folder are pushed (:data:`mmoe.hub_cards.publish.UPLOAD_ALLOWLIST`: weights,
config, remote code, tokenizer/processor, card, plots, reports); any other root file is named in a warning and
stays local. ``--push_to_hub`` without a valid ``--hub_model_id`` is refused before the card is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers import HfArgumentParser

from .model_card import write_model_card
from .publish import DEFAULT_COMMIT_MESSAGE, push_output_dir


@dataclass
class CardArguments:
    """Options of ``mmoe-card``."""

    output_dir: str = field(metadata={"help": "Pipeline output folder (config.json, eval_results.json, ...)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the folder to the Hub after writing the card."})
    hub_model_id: str | None = field(
        default=None,
        metadata={"help": "Hub repository, e.g. 'my-org/mmoe-minilm-mustard'; also shown in the usage snippet."},
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_token: str | None = field(
        default=None, metadata={"help": "Hub token; defaults to $HF_TOKEN or the `hf auth login` token."}
    )
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (created when missing)."})
    commit_message: str = field(default=DEFAULT_COMMIT_MESSAGE, metadata={"help": "Message of the Hub commit."})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmoe-card``; returns the process exit status."""
    parser = HfArgumentParser(CardArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if not (Path(args.output_dir) / "config.json").is_file():
        parser.error(f"--output_dir {args.output_dir} holds no config.json; pass a pipeline output folder.")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (e.g. my-org/mmoe-model).")
    if args.hub_model_id:
        try:
            validate_repo_id(args.hub_model_id)
        except HFValidationError as error:
            parser.error(f"--hub_model_id {args.hub_model_id!r} is not a valid Hub repository id: {error}")
    card = write_model_card(args.output_dir, model_id=args.hub_model_id)
    print(f"Wrote {args.output_dir}/README.md ({len(card.content)} characters).")
    if args.push_to_hub:
        commit = push_output_dir(
            args.output_dir,
            args.hub_model_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=args.commit_message,
            revision=args.hub_revision,
            update_card=False,
        )
        print(f"Pushed to {getattr(commit, 'commit_url', None) or args.hub_model_id}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
