"""``TorchClassifier``: a PyTorch model as a classifier that explanations run on its device.

Called with a NumPy batch (N, H, W, C) it returns NumPy probabilities, so it is a valid
``classifier_fn`` for lime itself. Given to ``limefast``'s ``explain_instance`` or
``explain_batch``, it supplies the device executor (``limefast.device``): the perturbed samples
are written model-ready on the device, the forward runs there and only the surrogate's
coefficients come back.
"""

from __future__ import annotations

import collections
import contextlib
import numbers
import threading

import numpy as np

from limefast import config
from limefast.device._torch import as_nchw, device_guard, import_torch
from limefast.device.options import (
    channel_stats,
    check_model_device,
    check_output,
    resolve_device,
    resolve_precision,
)
from limefast.device.pretrained import IDENTITY, logits_module, logits_of, normalisation_of
from limefast.kernels.model_ready import model_ready_cpu, normalise_coefficients

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
COMPILE_MODES = (None, "trace", "script", "inductor")
OUTPUTS = ("softmax", "sigmoid", "raw")


class TorchClassifier:
    """A PyTorch image classifier for LIME, run on its device.

    Args:
        model: a ``torch.nn.Module`` mapping (N, C, H, W) float images to (N, n_classes)
            outputs: a tensor, or what Hugging Face ``transformers`` classifiers return (the
            scores in ``.logits``); timm models as they are. A tuple is refused (wrap the
            model and select the scores). It is put
            in eval mode (and converted to channels_last memory format when
            ``channels_last``), in place.
        mean, std: per-channel normalisation, applied after ``scale``; their length is the
            number of channels images must have. Both None (the default) takes them from the
            model's own configuration: ``processor``'s ``image_mean`` / ``image_std``, else a
            timm model's ``pretrained_cfg``, else no normalisation (0 and 1). Only one of
            them given: the other is the identity's (0 or 1), as before these defaults.
        processor: a ``transformers`` image processor whose ``image_mean`` / ``image_std``
            normalise (``AutoImageProcessor.from_pretrained(name)``). Neither its resizing nor
            its ``rescale_factor`` is applied: give images of the model's input size, and
            ``scale`` if its values are not 1/255 of uint8 pixels.
        scale: factor mapping the image's values to [0, 1]; None means 1/255 for uint8,
            1/65535 for uint16 and 1 for float images.
        device: 'cpu', 'cuda' or 'cuda:i'; None picks CUDA when there is one, else the CPU.
            The model must already be on it.
        precision: 'fp32', 'fp16' or 'bf16' (autocast), or 'auto': fp16 on CUDA, fp32 on the
            CPU. One the device cannot run (bf16 on a GPU without it) is a ``ValueError``
            naming those it can; bf16 or fp16 on a CPU that only emulates them (no
            AVX512_BF16/AMX-BF16, resp. AVX512_FP16/AMX-FP16 units:
            ``limefast.device.features``) runs, slower than fp32, with a ``PerformanceHint``
            once per process.
        channels_last: feed the model NHWC memory-format tensors (faster convolutions on
            recent CPUs and on tensor cores).
        compile: None; 'trace' or 'script' (TorchScript, frozen: traced at the first forward
            of each input shape, or scripted when the classifier is built); or 'inductor'
            (``torch.compile`` with frozen weights, at the first forward of each shape).
            Frozen means batch norms fold into the convolutions as copies of their weights:
            do not change the model's weights after wrapping it (some changes would be seen,
            others not); wrap the changed model in a new TorchClassifier.
        output: 'softmax', 'sigmoid' or 'raw': what is applied to the model's outputs.
        batch_size: images per forward; None chooses from the image size on the CPU
            (``config.TORCH_CPU_INPUT_BYTES``: 8 images at 224x224) and, on CUDA, from the
            device's free memory. It replaces ``explain_instance``'s ``batch_size`` (lime's
            default of 10 is made for Python classifiers).
        cuda_graph: capture the fixed-shape forward in a CUDA graph (CUDA only).

    Raises:
        RuntimeError: CUDA asked for without a GPU visible to PyTorch, or without a working
            numba CUDA (the device kernels are Numba CUDA kernels).
        ValueError, TypeError: bad arguments, or a model on another device than ``device``.
    """

    def __init__(self, model, *, mean=None, std=None, scale=None, device=None,
                 precision="auto", channels_last=True, compile=None, output="softmax",
                 batch_size=None, cuda_graph=False, processor=None):
        torch = import_torch()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"model must be a torch.nn.Module; got {type(model).__name__} (wrap a function "
                "in an nn.Module whose forward calls it)"
            )
        own = normalisation_of(model, processor)
        if mean is None and std is None and own is not None:
            mean, std, self.normalisation = own
        else:  # given, or nothing to take: never half the model's and half the caller's
            self.normalisation = "none" if mean is None and std is None else "given"
            mean = IDENTITY[0] if mean is None else mean
            std = IDENTITY[1] if std is None else std
        self.mean, self.std = channel_stats(mean, std)
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
                    np.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a positive finite number or None; got {scale!r}")
            scale = float(scale)
        self.scale = scale
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}; got {compile!r}")
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or (
                    batch_size < 1):
                raise ValueError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")
            batch_size = int(batch_size)
        self.batch_size = batch_size
        self.output = output
        self.compile = compile
        self.channels_last = bool(channels_last)
        self.device = resolve_device(torch, device)
        self.precision = resolve_precision(torch, precision, self.device)
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device; got device="
                             f"'{self.device}' (drop cuda_graph, or pass device='cuda')")
        self.cuda_graph = bool(cuda_graph)
        check_model_device(model, self.device)

        model.eval()
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self._batches: dict = {}
        self._start()

    def _start(self) -> None:
        """The compiled module, caches, buffers and lock: what pickling leaves out."""
        torch = import_torch()
        self._module = self.model
        if self.compile == "script":
            try:
                scripted = torch.jit.script(self.model)
            except Exception as exc:
                raise ValueError(
                    f"torch.jit.script failed on this model ({exc}); use compile='trace' or None"
                ) from exc
            self._module = _frozen(torch, scripted)
        elif self.compile == "inductor":
            # Frozen: the weights become constants and batch norms fold into the convolutions,
            # as in the TorchScript modes (see the class docstring on changing the weights).
            self._module = torch.compile(logits_module(self.model), dynamic=False,
                                         options={"freezing": True})
        self._traced: collections.OrderedDict = collections.OrderedDict()
        self._checked: set = set()
        self._numpy_buffers: dict = {}
        self._executor = None
        # One forward at a time through the shared buffers (explanations in several threads).
        self.lock = threading.RLock()

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("_module", "_traced", "_checked", "_numpy_buffers", "_executor", "lock"):
            del state[key]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._start()

    # -- what the forward runs with ------------------------------------------------------------
    @property
    def amp_dtype(self):
        """The autocast dtype, or None for fp32."""
        torch = import_torch()
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    @property
    def input_dtype(self):
        """The dtype model-ready batches are written in (float16 for fp16 on CUDA, else float32)."""
        torch = import_torch()
        if self.precision == "fp16" and self.device.type == "cuda":
            return torch.float16
        return torch.float32

    def inference(self):
        """The context every forward runs in: inference mode and, unless fp32, autocast."""
        torch = import_torch()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.amp_dtype is not None:
            # The cast weights are cached for the whole context (one loop over the batches),
            # except under CUDA-graph capture, which must not hold on to them.
            stack.enter_context(torch.autocast(self.device.type, dtype=self.amp_dtype,
                                               cache_enabled=not self.cuda_graph))
        return stack

    def scale_for(self, dtype) -> float:
        """The factor mapping images of ``dtype`` to [0, 1]."""
        if self.scale is not None:
            return self.scale
        dtype = np.dtype(dtype)
        if dtype == np.uint8:
            return 1.0 / 255.0
        if dtype == np.uint16:
            return 1.0 / 65535.0
        if dtype.kind == "f":
            return 1.0
        raise ValueError(
            f"no default scale for {dtype} images: pass TorchClassifier(..., scale=...) mapping "
            "their values to [0, 1]"
        )

    def coefficients(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """(k, b) float32 per channel: model-ready = pixel * k + b."""
        return normalise_coefficients(self.scale_for(dtype), self.mean, self.std)

    def check_image_shape(self, shape) -> None:
        """Images must be (H, W, C) with C the length of ``mean``/``std``."""
        shape = tuple(shape)
        if len(shape) != 3 or shape[2] != self.mean.size:
            got = f"{shape[2]} channels" if len(shape) == 3 else f"shape {shape}"
            raise ValueError(
                f"the image has {got} but the TorchClassifier's mean/std have "
                f"{self.mean.size} values: pass mean= and std= with one value per channel, or "
                "convert the image (a 2-D image becomes RGB through gray2rgb)"
            )

    def batch_for(self, image_shape) -> int:
        """Images per forward for images of ``image_shape`` (fixed once chosen)."""
        if self.batch_size is not None:
            return self.batch_size
        key = tuple(image_shape)
        if key not in self._batches:
            if self.device.type == "cpu":
                batch = config.TORCH_CPU_INPUT_BYTES // (int(np.prod(key)) * 4)
                batch = max(1, min(config.TORCH_CPU_MAX_BATCH, batch))
            else:
                torch = import_torch()
                free, _ = torch.cuda.mem_get_info(self.device)
                itemsize = torch.empty((), dtype=self.input_dtype).element_size()
                per_image = int(np.prod(key)) * itemsize * config.TORCH_ACTIVATION_FACTOR
                batch = int(free * config.DEVICE_MEMORY_FRACTION // max(1, per_image))
                batch = max(1, min(config.TORCH_MAX_DEVICE_BATCH, batch))
            self._batches[key] = batch
        return self._batches[key]

    def forward(self, x):
        """Probabilities (n, n_classes) float32 of a model-ready (n, C, H, W) device tensor.

        Call inside ``inference()``. The output is checked once per input shape.
        """
        torch = import_torch()
        module = self._module
        if self.compile == "trace":
            module = self._traced_for(x)
        out = logits_of(module(x))
        key = tuple(x.shape)
        if key not in self._checked:
            check_output(torch, out, x.shape[0])
            self._checked.add(key)
        out = out.float()
        if self.output == "softmax":
            return torch.softmax(out, dim=1)
        if self.output == "sigmoid":
            return torch.sigmoid(out)
        return out

    def _traced_for(self, x):
        """The frozen trace for the shape of ``x``; the last ``config.TORCH_MAX_TRACES`` shapes
        are kept (each holds its own folded copy of the weights)."""
        torch = import_torch()
        key = tuple(x.shape)
        if key in self._traced:
            self._traced.move_to_end(key)
        else:
            # Traced in float32 (a float16 batch, as CUDA's fp16 path writes, would meet float32
            # weights) outside autocast and inference mode (autocast's cast weights and
            # inference tensors would be baked in as constants); the traced graph then runs
            # under the forward's autocast like the module itself.
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(
                    self.device.type, enabled=False):
                example = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
                if self.channels_last:
                    example = example.to(memory_format=torch.channels_last)
                self._traced[key] = _frozen(torch, torch.jit.trace(
                    logits_module(self.model), example, check_trace=False))
            while len(self._traced) > max(1, config.TORCH_MAX_TRACES):
                self._traced.popitem(last=False)
        return self._traced[key]

    # -- the NumPy classifier_fn ---------------------------------------------------------------
    def __call__(self, batch) -> np.ndarray:
        """(N, n_classes) float32 NumPy probabilities of a (N, H, W, C) NumPy batch.

        The batch is scaled, normalised and laid out by the same kernel as the device path,
        then run in equal chunks of at most ``batch_for`` images (lime's calls of 10 run as
        two forwards of 5 at 224x224, one traced shape rather than 8 and 2).
        """
        torch = import_torch()
        if torch.is_tensor(batch):
            batch = batch.detach().cpu().numpy()
        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise ValueError(f"TorchClassifier takes a (N, H, W, C) batch; got shape {batch.shape}")
        self.check_image_shape(batch.shape[1:])
        if batch.dtype.kind not in "iuf":
            raise TypeError(f"the batch must hold numbers; got dtype {batch.dtype}")
        n = batch.shape[0]
        step = self.batch_for(batch.shape[1:])
        step = -(-n // -(-n // step)) if n else step  # equal chunks, each at most step
        outputs = []
        with self.lock, device_guard(self.device), self.inference():
            for start in range(0, n, step):
                chunk = batch[start:start + step]
                x = self._model_ready(chunk)
                outputs.append(self.forward(x).cpu().numpy())
        if not outputs:
            raise ValueError("TorchClassifier got an empty batch")
        return np.concatenate(outputs)

    def _model_ready(self, chunk: np.ndarray):
        torch = import_torch()
        n, h, w, c = chunk.shape
        k, b = self.coefficients(chunk.dtype)
        if self.device.type == "cpu":
            key = (h, w, c)
            buf = self._numpy_buffers.get(key)
            if buf is None or buf.shape[0] < n:
                buf = np.empty((max(n, self.batch_for(key)), h * w * c), np.float32)
                self._numpy_buffers[key] = buf
            model_ready_cpu(chunk, k, b, buf, self.channels_last, task_bytes=config.TASK_BYTES,
                            threads=config.CPU_THREADS)
            return as_nchw(torch.from_numpy(buf[:n]), (n, h, w, c), self.channels_last)
        from limefast.device.cuda import model_ready_numpy_cuda

        return model_ready_numpy_cuda(self, chunk, k, b)

    # -- the explainer's hook ------------------------------------------------------------------
    def limefast_executor(self):
        """The device executor (``limefast.device.TorchExecutor``) for this classifier."""
        if self._executor is None:
            from limefast.device.executor import TorchExecutor

            self._executor = TorchExecutor(self)
        return self._executor

    def __repr__(self) -> str:
        return (f"TorchClassifier({type(self.model).__name__}, device='{self.device}', "
                f"precision='{self.precision}', channels_last={self.channels_last}, "
                f"compile={self.compile!r}, output='{self.output}', "
                f"batch_size={self.batch_size})")


def _frozen(torch, module):
    """``torch.jit.freeze``: attributes inlined as constants, batch norms folded into the
    convolutions, in float32 (autocast still applies when it runs)."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.jit.freeze(module.eval())
