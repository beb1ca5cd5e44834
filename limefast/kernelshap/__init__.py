"""KernelSHAP over superpixels on limefast's machinery: ``KernelShapImageExplainer``.

``explainer`` runs LIME's stages (checks, segmentation, the fudged image, the perturbation
kernels and executors) with the Shapley kernel's coalitions; ``estimator`` chooses the coalitions
(exact enumeration, or paired sampling by size) and fits the values with efficiency as a
constraint; ``adjustment`` fits boosted trees first, whose Shapley values are exact, and leaves
the fit only what they miss.
"""

from limefast.kernelshap.explainer import KernelShapImageExplainer, ShapImageExplanation

__all__ = ["KernelShapImageExplainer", "ShapImageExplanation"]
