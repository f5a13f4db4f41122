"""LoRA (SPEC §13): read kohya LoRA/LoCon and LyCORIS files, merge them, bake them into checkpoints, and
extract them from the difference of two checkpoints or two LoRAs."""
