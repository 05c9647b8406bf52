"""Scoring generated views, and genvs-eval's parts.

Scores: quality.py (full-frame and object-crop PSNR / SSIM, the gradient-energy ratio), metrics.py (LPIPS / FID where
their weights are on disk), consistency.py (3D consistency of a generated sequence). genvs-eval
(scripts/evaluate.py) is wired from protocol.py (which objects and views, the fixed plan of batches, per-image
seeds), batches.py (rendering and sampling a plan's batches across objects), results.py (the resumable CSV files)
and paths.py (autoregressive paths along a data set's own views, scored for consistency).
"""
