"""The sampling study in two halves: does ``num_samples="auto"`` keep its promise on images it
was not tuned on?

Trained models of different architectures and tasks (``limefast.models``: the digits CNN, the
faces MLP, the shapes CNN, the Keras stripes CNN, and the blobs residual CNN), ``hide_color=0``
and the mean fill, slic, quickshift and felzenszwalb segmentations of 15-60 superpixels,
``top_labels`` 1 and 3. Every case (model, test image, segmentation, fill) has a reference
explanation at 16000 rows on a seed of its own; lime's fixed counts and ``"auto"`` are scored by
the top-5 overlap of each explained label with the reference's, against the images the model
saw, and by how well the ``expected_overlap`` they state matches the overlap they reach.

*The halves* (``cases``): the **tuning** half, 72 cases of the first four models, and the
**held-out** half, 90 other test images of those models and of the blobs model, which no tuning
run sees (``Case.half`` says which). ``measure.tune`` chooses ``config.AUTO_TARGET_OVERLAP`` and
``config.AUTO_MIN_GAIN`` from the tuning half only, by replaying the rule on every prefix of
its rows (``trajectory``); the held-out half is only ever measured.
``python -m limefast.benchsuite.study --help`` runs it.
"""
