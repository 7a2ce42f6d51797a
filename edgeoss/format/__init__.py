"""The model directory on disk (docs/FORMAT.md): the manifest and weights.bin, our safetensors
reader and writer, reads of the weights file, the bundled vocabulary.
The lowest floor: imports only edgeoss.config and edgeoss.errors, never a folder above it."""
