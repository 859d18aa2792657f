"""dfx demo: the whole pipeline on the embedded synthetic data set, in a few minutes on a CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dfx.cli.console import RichProgress, stdout
from dfx.cli.errors import handle_errors
from dfx.cli.evaluate import render_evaluation
from dfx.cli.options import Device, Seed, artifact_option
from dfx.cli.outputs import check_outputs, plan_outputs
from dfx.cli.training import render_base_results, render_fusion_result

EPILOG = """\
[bold]Examples[/bold]

  dfx demo                         # writes ./dfx-demo
  dfx demo --out /tmp/demo --per-generator 60 --base-epochs 4

Runs split → train-base (dm, gan, real) → train-fusion → evaluate → predict on a
simulated data set: real crops of scikit-learn's sample photos and textures, and
"generated" images that carry simulated GAN (transposed-convolution checkerboard) and
latent-diffusion (8× bottleneck) fingerprints. It shows that the pipeline works; it
says nothing about accuracy on real generators.
"""

PREDICT_SAMPLES = 6


@handle_errors
def demo_command(
    out: Annotated[
        Path, artifact_option(help="Folder for data, models, reports.", metavar="DIR")
    ] = Path("dfx-demo"),
    per_generator: Annotated[
        int, typer.Option("--per-generator", min=10, help="Synthetic images per generator.")
    ] = 300,
    image_size: Annotated[
        int, typer.Option("--image-size", min=32, max=256, help="Image side.")
    ] = 64,
    base_epochs: Annotated[
        int, typer.Option("--base-epochs", min=1, help="Base-model epochs.")
    ] = 30,
    fusion_epochs: Annotated[
        int, typer.Option("--fusion-epochs", min=1, help="Fusion-head epochs.")
    ] = 30,
    device: Device = "auto",
    seed: Seed = 0,
) -> None:
    """Run the whole pipeline on a small simulated data set (tiny backbone, small images)."""
    check_outputs(folders={"--output": out})  # before torch loads: a bad folder fails at once
    from rich.markup import escape

    from dfx import synthetic
    from dfx.api import load_detector
    from dfx.cli.tables import predictions_table, split_table
    from dfx.data.labelled import images_from_manifest
    from dfx.data.manifest import ROLES, make_manifest, write_manifest
    from dfx.engine.configs import demo_configs
    from dfx.engine.evaluation import EvaluationConfig, evaluate
    from dfx.engine.pipeline import train_detector

    console = stdout()
    console.print(
        "[bold]dfx demo[/bold]: a scaled-down DeepFeatureX run (tiny backbone, "
        f"{image_size}×{image_size} images, {base_epochs}+{fusion_epochs} epochs) on SIMULATED "
        "generator fingerprints. It shows the pipeline end to end; its numbers are not "
        "accuracy on real generated images."
    )
    data = out / "data"
    with RichProgress() as progress:
        total = per_generator * sum(len(g) for g in synthetic.GENERATORS.values())
        progress.start("data", total, "write synthetic data")
        synthetic.write_dataset(
            data,
            per_generator=per_generator,
            image_size=image_size,
            seed=seed,
            on_image=lambda: progress.advance("data"),
        )
        progress.finish("data")
    manifest = make_manifest(data, seed=seed)
    write_manifest(manifest, out / "manifest.csv")
    console.print(split_table(manifest.counts(), ROLES))

    base_config, fusion_config = demo_configs(
        image_size=image_size,
        base_epochs=base_epochs,
        fusion_epochs=fusion_epochs,
        seed=seed,
        device=device,
    )
    with RichProgress() as progress:
        trained = train_detector(
            manifest,
            out,
            base_config,
            fusion_config,
            progress=progress,
            on_base=lambda results: render_base_results(results, as_json=False),
        )
    fusion = trained.fusion
    render_fusion_result(fusion, as_json=False)

    detector = load_detector(fusion.path, device)
    test_images = images_from_manifest(manifest, "test")
    with RichProgress() as progress:
        evaluation = evaluate(detector, test_images, EvaluationConfig(seed=seed), progress=progress)
    render_evaluation(evaluation, plan_outputs([str(out / "evaluation.json")]))

    samples = [image.path for image in test_images[:: max(1, len(test_images) // PREDICT_SAMPLES)]]
    records = [p.to_dict() for p in detector.predict(samples[:PREDICT_SAMPLES])]
    for record in records:
        record["path"] = os.path.relpath(record["path"])
    console.print(predictions_table(records))
    _explain_examples(detector, test_images, out / "explain", console)
    console.print(
        f"\nNext: [bold]dfx predict -M {escape(str(fusion.path))} IMAGE...[/bold]  (or "
        f"[bold]dfx evaluate -M {escape(str(fusion.path))} "
        f"-m {escape(str(out / 'manifest.csv'))} --qf 50[/bold])"
    )


def _explain_examples(detector, test_images, folder: Path, console) -> None:
    """Write the explanation of the first test image of each class to ``folder``."""
    from rich.markup import escape

    from dfx.classes import CLASSES
    from dfx.data.decoding import load_rgb
    from dfx.errors import DfxError
    from dfx.overlays import write_explanation

    try:
        detector.check_explain()
    except DfxError as missing:  # the demo's other results stand without it
        console.print(f"[yellow]explanations skipped:[/yellow] {escape(str(missing))}")
        return
    firsts = {}
    for image in test_images:
        firsts.setdefault(image.label, image.path)
    threshold = detector.resolve_threshold().value
    for explanation in detector.explain([firsts[c] for c in CLASSES if c in firsts]):
        if explanation.error is None:
            image = load_rgb(explanation.path)
            write_explanation(explanation, image, folder, Path(explanation.path).stem, threshold)
    console.print(f"Explanations of one test image per class: {escape(str(folder))}/")
