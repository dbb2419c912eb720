"""The words a run is configured with, without torch: a leaf below every package, so the CLI, the
suite files, the run config and the layers that act on a word all read one spelling."""

PRECISIONS = ("fp32", "bf16")  # bf16: autocast; parameters, masks and optimizer state stay fp32
HEAD_INITS = ("probe", "random")  # how a new task's head starts (strategies.heads)
HEAD_INIT_CHOICES = ("auto", *HEAD_INITS)  # what a run may ask for: auto = the registered one
DROPKEY_SCHEDULES = ("linear", "constant")  # per-layer DropKey ratio (models.attention)
DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when available
PREPROCESS_PRESETS = ("none", "deit")  # benchmarks.data.preprocess.PRESETS
HPARAMS_FROM = ("registered", "tuned")  # where a sweep's hyperparameters come from
