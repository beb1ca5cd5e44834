"""The sampling study in two halves: does ``num_samples="auto"`` keep its promise on images it
was not tuned on?

Four trained models of different architectures and tasks (``limefast.models``: the digits CNN,
the faces MLP, the shapes CNN and the Keras stripes CNN), ``hide_color=0`` and the mean fill,
slic, quickshift and felzenszwalb segmentations of 15-60 superpixels, ``top_labels`` 1 and 3.
Every case (model, test image, segmentation, fill) has a reference explanation at 16000 rows on
a seed of its own; lime's fixed counts and ``"auto"`` are scored by the top-5 overlap of each
explained label with the reference's, against the images the model saw, and by how well the
``expected_overlap`` they state matches the overlap they reach.

*The halves.* Cases alternate between the **tuning** half and the **held-out** half
(``cases.HALVES``; ``Case.half`` says which). ``tune`` chooses ``config.AUTO_SPREAD`` and
``config.AUTO_TARGET_OVERLAP`` from tuning-half records only; the held-out half is only ever
measured. ``python -m limefast.benchsuite.study --help`` runs it.
"""
