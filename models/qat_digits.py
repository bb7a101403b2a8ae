"""Quantization-aware training (QAT) of the digits CNN, exported as QDQ ONNX.

    ~/.venvs/qrt-tools/bin/python models/qat_digits.py

1. Train the FP32 CNN exactly as models/train_digits.py does (same seed, same split).
2. Fold each BatchNorm into the Conv before it (the integer model has no BatchNorm).
3. Fine-tune with fake quantization, a straight-through estimator (STE) for the rounding:
   - weights: per output channel, symmetric int8 (scale = max|w| / 127, zero point 0);
   - activations (the input, each ReLU output, the Gemm input): per tensor, asymmetric uint8, with
     min/max tracked by an exponential moving average for the first epochs, then frozen.
4. Export QDQ ONNX (QuantizeLinear/DequantizeLinear around every Conv/Gemm) to
   models/digits_cnn_qat.onnx with torch's TorchScript exporter: at export time the fake-quant
   modules call torch.fake_quantize_per_{tensor,channel}_affine (same forward as the STE function
   below), whose ONNX symbolics are QuantizeLinear + DequantizeLinear.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits_common as dc  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

OUT = os.path.join(dc.HERE, "digits_cnn_qat.onnx")


class FakeQuantSTE(torch.autograd.Function):
    """q = clamp(round_half_even(x / s) + zp, qmin, qmax); returns (q - zp) * s.
    Backward: the straight-through estimator, passing the gradient where x was inside the
    representable range and zero where it was clamped."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        q = torch.round(x / scale) + zero_point  # torch.round rounds half to even, like ONNX
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (q.clamp(qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric uint8 activation fake-quant with an EMA min/max observer."""

    def __init__(self, momentum=0.1):
        super().__init__()
        self.momentum = momentum
        self.observe = True
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def qparams(self):
        lo = torch.clamp(self.min_val, max=0.0)
        hi = torch.clamp(self.max_val, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zp = torch.clamp(torch.round(-lo / scale), 0, 255)
        return scale, zp

    def forward(self, x):
        if self.training and self.observe:
            with torch.no_grad():
                lo, hi = x.min(), x.max()
                if torch.isinf(self.min_val):
                    self.min_val.copy_(lo)
                    self.max_val.copy_(hi)
                else:
                    self.min_val.mul_(1 - self.momentum).add_(self.momentum * lo)
                    self.max_val.mul_(1 - self.momentum).add_(self.momentum * hi)
        if torch.onnx.is_in_onnx_export():
            # Frozen parameters captured as plain tensors: they export as constants.
            scale, zp = self.frozen
            return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)
        scale, zp = self.qparams()
        return FakeQuantSTE.apply(x, scale, zp, 0, 255)

    def freeze(self):
        scale, zp = self.qparams()
        self.frozen = (scale.detach().clone().float(), zp.detach().clone().int())


def weight_scale(w):
    """Per-output-channel symmetric int8: scale = max|w| / 127, zero point 0, so |q| <= 127."""
    return w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-8) / 127.0


class WeightFakeQuant:
    def fq_weight(self):
        w = self.weight
        if torch.onnx.is_in_onnx_export():
            scale = self.frozen_scale  # a plain tensor: exported as a constant
            return torch.fake_quantize_per_channel_affine(
                w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -128, 127)
        scale = weight_scale(w).reshape((-1,) + (1,) * (w.dim() - 1))
        return FakeQuantSTE.apply(w, scale, 0.0, -127, 127)

    def freeze(self):
        self.frozen_scale = weight_scale(self.weight).clone().float()


class QConv(WeightFakeQuant, nn.Conv2d):
    def forward(self, x):
        return self._conv_forward(x, self.fq_weight(), self.bias)


class QLinear(WeightFakeQuant, nn.Linear):
    def forward(self, x):
        return nn.functional.linear(x, self.fq_weight(), self.bias)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> QConv:
    q = QConv(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
              padding=conv.padding, groups=conv.groups, bias=True)
    with torch.no_grad():
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        q.weight.copy_(conv.weight * k.reshape(-1, 1, 1, 1))
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        q.bias.copy_((b0 - bn.running_mean) * k + bn.bias)
    return q


class QATDigitsCNN(nn.Module):
    def __init__(self, fp32: nn.Sequential):
        super().__init__()
        c1, bn1, _, c2, bn2, _, c3, _, _, _, fc = fp32
        self.q_in = ActFakeQuant()
        self.conv1 = fold_bn(c1, bn1)
        self.q1 = ActFakeQuant()
        self.conv2 = fold_bn(c2, bn2)
        self.q2 = ActFakeQuant()
        self.conv3 = QConv(16, 32, 1)
        self.conv3.load_state_dict(c3.state_dict())
        self.q3 = ActFakeQuant()
        self.pool = nn.MaxPool2d(2)
        self.fc = QLinear(32 * 4 * 4, 10)
        self.fc.load_state_dict(fc.state_dict())

    def forward(self, x):
        x = self.q_in(x)
        x = self.q1(torch.relu(self.conv1(x)))
        x = self.q2(torch.relu(self.conv2(x)))
        x = self.q3(torch.relu(self.conv3(x)))
        # MaxPool and Flatten keep the quantized grid: re-quantizing with the same parameters is
        # exact, and gives the Gemm the DequantizeLinear input a QDQ runtime looks for.
        x = self.q3(torch.flatten(self.pool(x), 1))
        return self.fc(x)

    def freeze_observers(self):
        for m in self.modules():
            if isinstance(m, ActFakeQuant):
                m.observe = False

    def freeze_for_export(self):
        for m in self.modules():
            if isinstance(m, (ActFakeQuant, WeightFakeQuant)):
                m.freeze()


def main() -> int:
    x_train, x_test, y_train, y_test = dc.load_split()
    dc.seed_everything()
    print("training the FP32 CNN")
    fp32 = dc.train(dc.make_cnn(), x_train, y_train)
    acc_fp32 = dc.accuracy(fp32, x_test, y_test)

    qat = QATDigitsCNN(fp32)
    with torch.no_grad():  # calibrate the observers on a few training batches before fine-tuning
        qat.train()
        for i in range(0, 512, 64):
            qat(torch.from_numpy(x_train[i:i + 64]))
    acc_before = dc.accuracy(qat, x_test, y_test)
    print(f"QAT fine-tuning (fake-quant accuracy before: {acc_before:.4f})")
    epochs, freeze_at = 15, 10
    # dc.train runs all epochs at once; freeze the observers halfway through by training twice.
    dc.train(qat, x_train, y_train, epochs=freeze_at, lr=3e-4, weight_decay=0.0)
    qat.freeze_observers()
    dc.train(qat, x_train, y_train, epochs=epochs - freeze_at, lr=1e-4, weight_decay=0.0)
    acc_qat = dc.accuracy(qat, x_test, y_test)

    qat.eval()
    qat.freeze_for_export()
    torch.onnx.export(qat, (torch.zeros(1, 1, 8, 8),), OUT, input_names=["input"],
                      output_names=["logits"], opset_version=dc.OPSET,
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    print(f"FP32 {acc_fp32:.4f}, QAT fake-quant {acc_qat:.4f} -> "
          f"{os.path.relpath(OUT, dc.ROOT)} ({os.path.getsize(OUT)} bytes)")
    try:
        print(f"onnxruntime on the QDQ model: {dc.ort_accuracy(OUT, x_test, y_test):.4f}")
    except ImportError:
        pass
    return 0 if acc_qat >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
