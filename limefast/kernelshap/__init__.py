"""KernelSHAP over superpixels on limefast's machinery: ``KernelShapImageExplainer``.

``explainer`` runs LIME's stages (checks, segmentation, the fudged image, the perturbation
kernels and executors) with the Shapley kernel's coalitions; ``estimator`` chooses the coalitions
(exact enumeration, or paired sampling by size) and fits the values with efficiency as a
constraint.
"""

from limefast.kernelshap.explainer import KernelShapImageExplainer, ShapImageExplanation

__all__ = ["KernelShapImageExplainer", "ShapImageExplanation"]
