"""The generator model: a plain trainable base LM from an LM spec (:mod:`.base`), the init modes that expand
its vocabulary (:mod:`.init_modes`), freeze presets (:mod:`.freeze`, with the split tables of
:mod:`.split_rows`) and step-0 diagnostics (:mod:`.diagnostics`). Import the submodules; this package imports
nothing heavy."""
