"""RF1M-synth: a procedural world in RF1M's layout whose label classes come from rule-defined defects."""
