"""Image-quality metrics: PIQUE, edge sharpness, SNR and ground-truth fidelity."""

from clade_jax.metrics.fidelity import foreground_mask
from clade_jax.metrics.fidelity import psnr
from clade_jax.metrics.fidelity import ssim
from clade_jax.metrics.fidelity import ssim_map
from clade_jax.metrics.fidelity import ssim_per_slice
from clade_jax.metrics.pique import PiqueResult
from clade_jax.metrics.pique import pique
from clade_jax.metrics.pique import pique_volume
from clade_jax.metrics.pique import pique_with_masks
from clade_jax.metrics.sharpness import edge_sharpness
from clade_jax.metrics.sharpness import mean_edge_sharpness
from clade_jax.metrics.sharpness import sample_profile
from clade_jax.metrics.snr import box_roi
from clade_jax.metrics.snr import snr
from clade_jax.metrics.snr import sphere_roi

__all__ = [
    "PiqueResult",
    "box_roi",
    "edge_sharpness",
    "foreground_mask",
    "mean_edge_sharpness",
    "pique",
    "pique_volume",
    "pique_with_masks",
    "psnr",
    "sample_profile",
    "snr",
    "sphere_roi",
    "ssim",
    "ssim_map",
    "ssim_per_slice",
]
