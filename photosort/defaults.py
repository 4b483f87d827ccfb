"""Defaults shared by the stages and the command line, light enough to import for ``--help``."""

from __future__ import annotations

MAX_MEGAPIXELS = 200.0
"""Larger than any camera sensor sold today, far below what a decompression bomb declares."""

MAX_FILE_MB = 2000.0
"""``scan --max-file-size``: no camera writes a photo of 2 GB (a 200 MP raw-sized JPEG is
about 100 MB); a larger file named like one is not worth minutes of hashing."""

WORKING_SIDE = 1000
"""Longest side faces are detected at: a 12 MP (4000x3000) JPEG decodes straight to it at
1/4 scale in draft mode; 1024 would force a 1/2-scale decode, about three times slower."""

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The seven FER-2013 classes in the dataset's label order (``photosort.emotions`` re-exports)."""

DETECTOR_NAMES = ("blazeface", "blazeface-whole")
"""Face detectors ``scan --detector`` offers; the first is the default."""

REPORT_MANIFEST = ".photosort-report.json"
"""The file listing what ``report`` wrote into its OUTDIR; it also marks the folder as an
album, which scans skip (its copies of photos would otherwise top the rankings)."""

DEFAULT_MIN_SCORE = 0.6
"""BlazeFace confidence a face needs; tuned on the annotated photos (see bench/bench_faces.py)."""

DEFAULT_MIN_PRESENCE = 0.0
"""Face-presence logit the face mesh must give a detected face (``scan --min-presence``).

Measured on the annotated photos (119 photos, 180 faces; ``bench/bench_faces.py --presence``,
scan's own path at min score 0.6): without the mesh recall 0.989, precision 0.978 (4 false
faces); with it, any threshold from -2 to 1 gives recall 0.989, precision 0.994 (1 false
face). At 2 recall falls to 0.983, at 4 to 0.978, at 6 to 0.956 (faces in profile, behind
sunglasses or hands). 0 is the middle of that plateau. A lower detector score does not
buy recall back: at 0.45 with the mesh, precision is 0.941."""

DEFAULT_MIN_FACE = 24.0
"""Faces whose box is under this many photo pixels on its longer side are too small to read."""

DEFAULT_MIN_PROBABILITY = 0.25
"""How likely (calibrated) a photo's best face must show an emotion to be listed for it: a
top-10 of a small library should not fill up with faces that show something else."""

DEFAULT_SAMPLES = 750
"""Perturbed crops LIME asks the model about per explanation. ``bench/bench_lime_samples.py``
(54 explanations of 27 faces): against a 5000-sample reference, the five most supporting
superpixels agree 0.76 at 250 samples, 0.84 at 500, 0.88 at 1000, 0.92 at 2000 and 0.94 for
a second 5000-sample run (the reference's own noise). Since explanations keep the best of
several LIME fits screened by the deletion check, ``bench/bench_faithful.py`` finds 750 as
faithful as 1000 (56 album explanations: 0.93 both), and the 250 crops saved pay for the
screening."""

DEFAULT_SEGMENTS = 40
"""Superpixels a face crop is cut into for LIME."""

PEAK_LR = 2e-3
"""Peak learning rate of training's warm-up + cosine schedule (``train --lr``)."""

LABEL_MODES = ("fer2013", "ferplus", "mix")
"""Training targets ``train --labels`` offers: original labels, FER+ votes, or their mean."""

WIDTHS = (32, 64, 128, 256)
"""The emotion network's stage widths (``train --widths``); the shipped model's."""

AUGMENT_MODES = ("full", "flip", "photo", "none")
"""Training augmentations ``train --augment`` offers; the first is the default."""

QUANTIZE_MODES = ("int8", "float")
"""How ``export`` writes the LiteRT model: int8 weights and activations (about 3x faster on a
CPU, measured in MODEL_CARD.md), or float (the Keras network's logits exactly)."""

DEFAULT_BALANCE = 1.0
"""``export --balance``: class weights (1/frequency)**1 for the per-class logit offsets, so
that every emotion counts alike and neutral stops absorbing angry, fear and sad."""
