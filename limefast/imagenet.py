"""ImageNet's per-channel normalisation (torchvision's pretrained models), in one home that
imports nothing: the command line, the benchmarks and the tests take it from here."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
