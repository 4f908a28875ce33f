"""The package version, in its own module so the server never imports the kernel-side face."""
__version__ = "0.1.0"
