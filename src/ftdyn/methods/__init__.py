"""Fine-tuning methods: plans of phases (`plan`), one training loop (`module`, `fit`), the linear
probe (`linear_probe`), phase checkpoints (`checkpoints`) and sharded training (`sharding`)."""
