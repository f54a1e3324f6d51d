"""PyTorch reference of the CLADE networks and train step, for speed comparisons only.

The same functions as clade_jax.models and clade_jax.train.train_step, written the way
a PyTorch user would (eager mode, channels-last, oneDNN convolutions), so that
benchmarks/models.py can time both frameworks in one process on the same machine.
`port_generator_params` / `port_discriminator_params` copy flax params into these
modules, and benchmarks/models.py --check verifies that both frameworks then compute
the same outputs (to float32 round-off).

PyTorch is a benchmark-only dependency (`pip install -e .[bench]`); nothing under
clade_jax imports it.

Differences of form, not of function:
- The transposed convolutions reproduce `lax.conv_transpose(..., 'SAME')` exactly:
  ConvTranspose2d(padding=0) computes one extra row and column, which is cropped (the
  CycleGAN code's padding=1, output_padding=1 shifts the output by one pixel instead).
  The extra row and column cost about 0.4% of the generator's FLOPs.
- Demodulation is applied to the weight inside forward(), as in the JAX code, so its
  cost and its gradient are part of every step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEMOD_EPSILON = 1e-8
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def demodulate(weight: torch.Tensor, out_axis: int) -> torch.Tensor:
  """Eq. 6: every output channel's kernel scaled to unit L2 norm."""
  axes = [a for a in range(weight.ndim) if a != out_axis]
  return weight * torch.rsqrt(weight.square().sum(dim=axes, keepdim=True) + DEMOD_EPSILON)


class Conv(nn.Conv2d):
  """nn.Conv2d with optional weight demodulation (zero padding, square kernels)."""

  def __init__(self, c_in, c_out, k, stride=1, padding=0, demod=False, bias=True):
    super().__init__(c_in, c_out, k, stride=stride, padding=padding, bias=bias)
    self.demod = demod
    nn.init.normal_(self.weight, std=0.02)
    if bias:
      nn.init.zeros_(self.bias)

  def forward(self, x):
    w = demodulate(self.weight, 0) if self.demod else self.weight
    return F.conv2d(x, w, self.bias, self.stride, self.padding)


class ConvTranspose(nn.ConvTranspose2d):
  """Stride-2, 3x3 transposed conv equal to lax.conv_transpose(..., 'SAME') in JAX."""

  def __init__(self, c_in, c_out, demod=False):
    super().__init__(c_in, c_out, 3, stride=2, padding=0)
    self.demod = demod
    nn.init.normal_(self.weight, std=0.02)
    nn.init.zeros_(self.bias)

  def forward(self, x):
    w = demodulate(self.weight, 1) if self.demod else self.weight
    y = F.conv_transpose2d(x, w, self.bias, stride=2)
    return y[:, :, :2 * x.shape[2], :2 * x.shape[3]]


class ResidualBlock(nn.Module):

  def __init__(self, c, demod):
    super().__init__()
    self.conv1 = Conv(c, c, 3, demod=demod)
    self.conv2 = Conv(c, c, 3, demod=demod)

  def forward(self, x):
    h = F.relu(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")))
    return x + self.conv2(F.pad(h, (1, 1, 1, 1), mode="reflect"))


class ResnetGenerator(nn.Module):
  """CLADE's generator (norm='demod' only: that is the network we benchmark)."""

  def __init__(self, features=64, num_blocks=6, channels=1):
    super().__init__()
    f = features
    self.head = Conv(channels, f, 7, demod=True)
    self.down = nn.ModuleList([Conv(f, 2 * f, 3, 2, 1, demod=True),
                               Conv(2 * f, 4 * f, 3, 2, 1, demod=True)])
    self.blocks = nn.ModuleList([ResidualBlock(4 * f, True) for _ in range(num_blocks)])
    self.up = nn.ModuleList([ConvTranspose(4 * f, 2 * f, demod=True),
                             ConvTranspose(2 * f, f, demod=True)])
    self.tail = Conv(f, channels, 7, demod=True)

  def forward(self, x):
    h = F.relu(self.head(F.pad(x, (3, 3, 3, 3), mode="reflect")))
    for layer in self.down:
      h = F.relu(layer(h))
    for block in self.blocks:
      h = block(h)
    for layer in self.up:
      h = F.relu(layer(h))
    return torch.tanh(self.tail(F.pad(h, (3, 3, 3, 3), mode="reflect")))


class PatchDiscriminator(nn.Module):
  """PatchGAN with instance norm, as clade_jax.models.discriminator.PatchDiscriminator."""

  def __init__(self, features=64, num_layers=3, channels=1):
    super().__init__()
    self.convs = nn.ModuleList([Conv(channels, features, 4, 2, 1)])
    c = features
    for n in range(1, num_layers + 1):
      c_next = features * min(2**n, 8)
      self.convs.append(Conv(c, c_next, 4, 2 if n < num_layers else 1, 1, bias=False))
      c = c_next
    self.convs.append(Conv(c, 1, 4, 1, 1))

  def forward(self, x):
    h = F.leaky_relu(self.convs[0](x), 0.2)
    for conv in self.convs[1:-1]:
      h = F.leaky_relu(F.instance_norm(conv(h), eps=1e-5), 0.2)
    return self.convs[-1](h)


def sobel(images):
  kernels = torch.stack([SOBEL_X, SOBEL_X.T])[:, None].to(images)  # [2, 1, 3, 3]
  grads = F.conv2d(images, kernels)
  return grads[:, 0:1], grads[:, 1:2]


def gradient_map_loss(inputs, cycled):
  gx_in, gy_in = sobel(inputs)
  gx_cyc, gy_cyc = sobel(cycled)
  return ((gx_cyc - gx_in) + (gy_cyc - gy_in)).abs().mean()


def bce_logits(logits, target: float):
  return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class CycleGAN(nn.Module):
  """The four networks and clade_jax.train.compute_losses's objective."""

  def __init__(self, features=64, num_blocks=6, disc_features=64, disc_layers=3,
               cyc=1.0, ident=1.0, gmap=5.0):
    super().__init__()
    self.G_X = ResnetGenerator(features, num_blocks)
    self.G_Y = ResnetGenerator(features, num_blocks)
    self.D_X = PatchDiscriminator(disc_features, disc_layers)
    self.D_Y = PatchDiscriminator(disc_features, disc_layers)
    self.cyc, self.ident, self.gmap = cyc, ident, gmap

  def losses(self, x, y):
    """Total loss whose single backward pass gives every network its own gradient.

    As in the JAX step: the generator terms see the discriminators frozen (no gradient
    to D's weights), the discriminator terms see detached generated images.
    """
    fake_y, fake_x = self.G_X(x), self.G_Y(y)
    cycled_x, cycled_y = self.G_Y(fake_y), self.G_X(fake_x)
    discriminators = (self.D_X, self.D_Y)
    for d in discriminators:
      d.requires_grad_(False)
    adversarial = bce_logits(self.D_Y(fake_y), 1.0) + bce_logits(self.D_X(fake_x), 1.0)
    for d in discriminators:
      d.requires_grad_(True)
    cycle = (cycled_x - x).abs().mean() + (cycled_y - y).abs().mean()
    identity = (self.G_X(y) - y).abs().mean() + (self.G_Y(x) - x).abs().mean()
    gmap = gradient_map_loss(x, cycled_x) + gradient_map_loss(y, cycled_y)
    generator = adversarial + self.cyc * cycle + self.ident * identity + self.gmap * gmap
    d_x = 0.5 * (bce_logits(self.D_X(x), 1.0) + bce_logits(self.D_X(fake_x.detach()), 0.0))
    d_y = 0.5 * (bce_logits(self.D_Y(y), 1.0) + bce_logits(self.D_Y(fake_y.detach()), 0.0))
    return generator + d_x + d_y


def make_train_step(model: CycleGAN, learning_rate=2e-4, betas=(0.5, 0.999)):
  """One Adam over all four networks; returns step(x, y) -> loss tensor (no host sync)."""
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, betas=betas,
                               foreach=True)

  def step(x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = model.losses(x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


def channels_last(module_or_tensor):
  return module_or_tensor.to(memory_format=torch.channels_last)


def from_nhwc(array) -> torch.Tensor:
  """A float32 NHWC numpy/JAX array as a channels-last NCHW torch tensor."""
  return channels_last(torch.from_numpy(np.array(array, np.float32)).permute(0, 3, 1, 2))


def _conv_weight(kernel) -> torch.Tensor:  # HWIO -> OIHW
  return torch.from_numpy(np.array(kernel, np.float32)).permute(3, 2, 0, 1).contiguous()


def _conv_transpose_weight(kernel) -> torch.Tensor:  # HWIO -> IOHW, taps flipped
  w = torch.from_numpy(np.array(kernel, np.float32)).permute(2, 3, 0, 1)
  return w.flip(2, 3).contiguous()


def _load(module, params, transpose=False):
  with torch.no_grad():
    module.weight.copy_((_conv_transpose_weight if transpose else _conv_weight)(params["kernel"]))
    if "bias" in params:
      module.bias.copy_(torch.from_numpy(np.array(params["bias"], np.float32)))


def port_generator_params(module: ResnetGenerator, params) -> None:
  """Copies flax ResnetGenerator params (norm='demod') into `module`."""
  _load(module.head, params["Conv_0"])
  for i, layer in enumerate(module.down):
    _load(layer, params[f"Conv_{i + 1}"])
  for i, block in enumerate(module.blocks):
    _load(block.conv1, params[f"ResidualBlock_{i}"]["Conv_0"])
    _load(block.conv2, params[f"ResidualBlock_{i}"]["Conv_1"])
  for i, layer in enumerate(module.up):
    _load(layer, params[f"ConvTranspose_{i}"], transpose=True)
  _load(module.tail, params["Conv_3"])


def port_discriminator_params(module: PatchDiscriminator, params) -> None:
  """Copies flax PatchDiscriminator params into `module`."""
  for i, conv in enumerate(module.convs):
    _load(conv, params[f"Conv_{i}"])
