"""One build step beside pyproject.toml (which holds everything else): the published weights go into the wheel.

results/<folder>/ is the published record of each net (scripts/publish_result.py writes it). A wheel carries
the three files that load a net (model.json, model.safetensors, preprocess.safetensors: 1-4 MB for a CIFAR
net) as package data in resnet_repro/models/published/<folder>/, where models/weights.py reads them when the
package is installed rather than run from a checkout. Copying them at build time keeps one copy in git: no
second folder to keep in step with results/, and no symlink (which Windows checkouts and some archivers lose).
MANIFEST.in puts the same files in the sdist, so that a wheel built from the sdist carries them too.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESULTS = Path(__file__).resolve().parent / "results"
# What models/weights.py reads for one net; the folder's curves, figures and README stay out of the wheel.
NET_FILES = ("model.json", "model.safetensors", "preprocess.safetensors")
PUBLISHED_IN_PACKAGE = Path("resnet_repro", "models", "published")


class BuildPyWithPublishedWeights(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install runs from the checkout, where models/weights.py reads results/ itself
        # Every folder with a model.json is a published net: tests/test_published_weights.py holds these
        # folders to the entries of models.weights.PUBLISHED, one for one.
        folders = sorted(description.parent for description in RESULTS.glob("**/model.json"))
        if not folders:
            raise FileNotFoundError(f"{RESULTS}: no published net in it (no model.json): a wheel built now "
                                    "would load no published weights")
        for folder in folders:
            target = Path(self.build_lib, PUBLISHED_IN_PACKAGE, folder.relative_to(RESULTS))
            self.mkpath(str(target))
            for name in NET_FILES:
                self.copy_file(str(folder / name), str(target / name))


setup(cmdclass={"build_py": BuildPyWithPublishedWeights})
