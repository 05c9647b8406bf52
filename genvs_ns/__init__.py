"""GeNVS (Chan et al., ICCV 2023) as a nerfstudio plugin."""

__version__ = "0.1.0"
