"""Small trained models to explain, shared by the demo, the bench suite and the tests: each
trains in seconds on data that ships with a library or is generated, and is cached as a small
state-dict file (``limefast.models.cache``).

- ``digits``: a 4-layer CNN on scikit-learn's handwritten digits (32x32, 10 classes);
- ``faces``: a 625-32-2 MLP telling faces from non-faces (scikit-image's ``lfw_subset``);
- ``shapes``: a small CNN naming the shape drawn on a generated 32x32 image (4 classes);
- ``detector``: a CenterNet-style detector of shapes on generated 48x48 scenes (3 classes), its
  checkpoint shipped beside it;
- ``stripes``: a Keras 3 CNN (PyTorch backend) naming the orientation of generated stripes
  (32x32, 4 classes).

The modules import their framework when they are imported; import the one you need.
"""
