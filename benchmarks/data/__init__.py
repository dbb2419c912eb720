"""The data layer: image sources, task streams, the decode-once image cache, preprocessing
presets and the generated stand-ins for the paper's data."""
