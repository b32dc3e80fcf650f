"""``blemore predict MODEL_DIR --data DIR --split test --out submission.zip``: the CodaBench submission of a model.

Reads a model directory (``blemore retrain``, ``blemore train``, or a search trial's checkpoint), predicts every
clip of the release's test split (fold models and ensemble members averaged), decodes with the model's pooled
thresholds and writes the zip CodaBench takes (one JSON, ``test_XXXX.mov`` keys). Refuses, writing nothing, when
a test clip lacks features (the message names it) or the model directory is modified or incomplete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from search.safety import add_overwrite


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = sub.add_parser("predict", help="predict the test split with a model directory and write a CodaBench zip",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model directory (blemore retrain / train)")
    p.add_argument("--data", type=Path, required=True, help="BlEmoRe release root (with test_metadata.csv)")
    p.add_argument("--split", choices=("test",), default="test", help="split to predict (default test)")
    p.add_argument("--out", type=Path, required=True, help="submission file (.zip, or .json for the bare JSON)")
    add_overwrite(p)
    p.set_defaults(func=run)


def predict(model: Path, root: Path, out: Path, progress: bool = False) -> tuple[list[str], object, tuple]:
    """Predict the test split with ``model`` and write the submission ``out``.

    Returns:
        (test clip names (N,), decoded salience float32 (N, 6), (alpha, beta)).

    Raises:
        ArtifactError: the model directory is broken (named file); ValueError: a data problem (named file/clip);
        SubmissionError: an unwritable prediction.
    """
    from blemore_core.artifacts import read_model_dir
    from blemore_core.decoding import decode
    from blemore_core.refit import predict_model
    from blemore_core.submission import write_submission

    if Path(out).suffix.lower() not in (".zip", ".json"):
        raise ValueError(f"--out {out}: a submission must end in .zip or .json")
    md = read_model_dir(model)
    a, b = md.predict_thresholds()
    names, probs = predict_model(md, root, progress=progress)
    sal = decode(probs, a, b)
    write_submission(out, names, sal)
    return names, sal, (a, b)


def run(args: argparse.Namespace) -> int:
    """Handler of ``blemore predict``: 0 on success; an error raises :class:`InputError` (exit 2, nothing
    written)."""
    from blemore_core.artifacts import ArtifactError
    from search.errors import InputError
    from search.safety import check_output

    if not args.data.is_dir():
        raise InputError(f"--data {args.data}: no such directory")
    if args.out.suffix.lower() not in (".zip", ".json"):
        raise InputError(f"--out {args.out}: a submission must end in .zip or .json")
    check_output(args.out, "submission", inputs=[args.model, args.data], overwrite=args.overwrite)
    try:
        names, _, (a, b) = predict(args.model, args.data, args.out, progress=True)
    except (ArtifactError, ValueError) as e:
        raise InputError(str(e)) from None
    print(f"wrote {args.out}: {len(names)} test clips, decoded with alpha={a:.3f} beta={b:.3f}")
    return 0
