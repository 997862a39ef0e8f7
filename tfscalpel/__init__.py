"""tfscalpel: hardware-aware pruning for Keras 3."""
