"""
sax/precision.py -- mixed precision: which dtype each device gets, and the optimizer step
through the GradScaler that fp16 needs.
"""
import torch

# ----------------------------------------------------------------------------
# Precision: which dtype each device gets
# ----------------------------------------------------------------------------
# | device                       | auto gives                                      |
# | CUDA, compute capability 8+  | bf16 autocast (A100, H100, L4, RTX 30xx/40xx)   |
# | CUDA, older (T4, V100)       | fp16 autocast + GradScaler                      |
# | CPU                          | fp32 (bf16 works, but is slower on most CPUs)   |
# bf16 has fp32's exponent range, so gradients neither overflow nor underflow and no
# scaling is needed. fp16 has 5 exponent bits: small gradients underflow to zero
# unless the loss is scaled up first (GradScaler), and the scale is taken back off
# (unscale_) before clipping, so the clip threshold means what it says.
# Why not trust torch.cuda.is_bf16_supported(): it says True on a T4, where bf16 is emulated
# and slow.

def choose_precision(requested, device_type, capability=None):
    """-> (autocast dtype or None, use a GradScaler). capability: (major, minor) on CUDA.

    A pure function of its arguments, so the table above is unit-tested on a CPU.
    """
    if requested == "auto":
        requested = ("bf16" if capability[0] >= 8 else "fp16") if device_type == "cuda" else "fp32"
    if requested == "fp16" and device_type != "cuda":
        raise SystemExit("--dtype fp16 needs a CUDA GPU; on the CPU use --dtype bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16,
            "fp16": torch.float16}[requested], requested == "fp16"


def scaled_step(model, optimizer, scaler, grad_clip):
    """Unscale, clip, step. Returns (grad norm, whether the GradScaler skipped the step).

    With the scaler disabled (fp32, bf16) every call here is a plain pass-through, so
    the training loop has one code path for all precisions.
    """
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                          grad_clip if grad_clip > 0 else float("inf"))
    scale_before = scaler.get_scale()
    scaler.step(optimizer)  # skipped inside when a gradient is inf or nan ...
    scaler.update()         # ... and then the scale is lowered: that is how we see it
    return float(norm), scaler.is_enabled() and scaler.get_scale() < scale_before
