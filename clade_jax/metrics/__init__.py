"""Image-quality metrics: PIQUE, edge sharpness, SNR and ground-truth fidelity."""
