"""Turn the model's transformer into ONNX files for ONNX Runtime on CPU.

Two files, both reading ``input_ids`` + ``attention_mask`` and returning the token vectors
(``last_hidden_state``); pooling and normalization stay in numpy so that the ONNX and the
PyTorch paths share them:

- ``model.onnx``: fp32, the same arithmetic as PyTorch (the "exact" mode).
- ``model_int8.onnx``: dynamic int8 quantization of the weight matrices (the "fast" mode).
  Only MatMuls with a constant weight are quantized (``MatMulConstBOnly``): quantizing the
  attention products of two activations as well costs far more accuracy than it saves time.
  Weights are quantized per output channel for the same reason.

``semsearch package`` ships both inside model.tar.gz under ``onnx/``; a model directory
without them (a training job's output) is exported once at load time into a cache folder,
in a child process: importing torch and tracing the model raised the server's own peak RSS
from about 0.23 GB to 1.16 GB, memory a process never gives back. Exporting needs torch,
transformers and onnx; serving the files needs only onnxruntime (or openvino).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__:  # imported as inference_code.onnx_export (tests, the semsearch CLI)
    from .model_info import ModelInfo, read_model_info
else:  # imported from SageMaker's code/ folder, where every module is top-level
    from model_info import ModelInfo, read_model_info  # type: ignore[no-redef]

ONNX_SUBDIR = "onnx"
FILES = {"exact": "model.onnx", "fast": "model_int8.onnx"}
OPSET = 17


def _cache_root() -> Path:
    return Path(os.environ.get("SEMSEARCH_CACHE_DIR") or Path.home() / ".cache" / "semsearch")


#: Bump when the export or quantization recipe changes, so cached files are redone.
RECIPE_VERSION = 1


def _cache_key(info: ModelInfo) -> str:
    """Changes whenever the weights, the recipe or the runtime change. Needs no torch import:
    a cache hit must not pay for loading PyTorch."""
    import onnxruntime

    parts = [str(info.transformer_dir.resolve()), str(RECIPE_VERSION), onnxruntime.__version__]
    for path in sorted(info.transformer_dir.glob("*")):
        if path.suffix in (".safetensors", ".bin", ".json"):
            stat = path.stat()
            parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def onnx_path(info: ModelInfo, mode: str) -> Path:
    """The ONNX file for ``mode``: shipped with the model if present, else exported once into the cache."""
    shipped = info.model_dir / ONNX_SUBDIR / FILES[mode]
    if shipped.is_file():
        return shipped
    target = _cache_root() / "onnx" / _cache_key(info) / FILES[mode]
    if not target.is_file():
        export_in_child(info, target.parent, modes=(mode,))
    return target


def export_in_child(info: ModelInfo, out_dir: Path, *, modes: tuple[str, ...]) -> None:
    """``export`` in a fresh Python process, so that torch's memory leaves with it."""
    here = Path(__file__).resolve().parent
    # The same module, whether this is the package inference_code or SageMaker's top-level code/.
    root, module = (here.parent, __name__) if __package__ else (here, "onnx_export")
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from {module} import _main; _main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, str(info.model_dir), str(out_dir), *modes], check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exporting {info.model_dir} to ONNX failed (exit status {done.returncode}); "
                           "the exporter's error is in the log just above")


def _main(argv: list[str]) -> None:
    model_dir, out_dir, *modes = argv
    export(read_model_info(Path(model_dir)), Path(out_dir), modes=tuple(modes))


def export(info: ModelInfo, out_dir: Path, *, modes: tuple[str, ...] = ("exact", "fast")) -> list[Path]:
    """Write the ONNX files for ``modes`` into ``out_dir`` (atomically: a crash leaves no half file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / FILES["exact"]
    if not fp32.is_file():
        _write_atomically(fp32, lambda tmp: _export_fp32(info, tmp))
    if "fast" in modes and not (out_dir / FILES["fast"]).is_file():
        _write_atomically(out_dir / FILES["fast"], lambda tmp: _quantize_int8(fp32, tmp))
    return [out_dir / FILES[m] for m in modes]


def _write_atomically(target: Path, write) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(info: ModelInfo, out: Path) -> None:
    import numpy as np
    import torch
    from transformers import AutoModel

    # Eager attention exports to plain MatMul/Softmax nodes that ONNX Runtime fuses itself.
    model = AutoModel.from_pretrained(str(info.transformer_dir), attn_implementation="eager", dtype=torch.float32)

    class TokenVectors(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # eval() on the wrapper, not only the model: the exporter restores the wrapper's mode on
    # every submodule afterwards, and a fresh Module is in training mode (dropout on).
    wrapper = TokenVectors(model).eval()
    # Trace with a padded row so the masking path is the one recorded.
    ids = torch.randint(100, 1000, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    dynamic = {0: "batch", 1: "tokens"}
    with torch.inference_mode():
        torch.onnx.export(wrapper, (ids, mask), str(out), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "last_hidden_state": dynamic})

    # Check the graph on a shape it was not traced with: a trace that baked in a shape fails here.
    import onnxruntime as ort

    check_ids = torch.randint(100, 1000, (3, 11))
    check_mask = torch.ones_like(check_ids)
    check_mask[1, 7:] = 0
    with torch.inference_mode():
        expected = wrapper(check_ids, check_mask).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": check_ids.numpy(), "attention_mask": check_mask.numpy()})[0]
    valid = check_mask.numpy().astype(bool)
    error = float(np.abs(got[valid] - expected[valid]).max())
    if error > 1e-3:
        raise RuntimeError(f"ONNX export of {info.transformer_dir} disagrees with PyTorch (max abs error {error:.2e})")


def _quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"MatMulConstBOnly": True})
