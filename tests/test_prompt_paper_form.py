"""The prompt methods in their papers' form (strategies.prompting): plain heads that are the
masked single classifier, trunc-normal and never the probe; prompts and head in one Adam group at
the official rate; DualPrompt's new expert started from the previous one; the batch-wise vote."""

import math

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from conftest import fitting_hparams

from models.factory import create_backbone
from models.heads import PlainHead, StandardizedHead
from models.prompt_pools import ExpertPrefixes, L2PPool, majority
from strategies import get_strategy
from strategies.heads import ProbeHeadPlugin
from strategies.registry import TrainSettings, resolve_hparams

PROMPT_METHODS = ("l2p", "dualprompt", "coda-prompt")
BATCH, STEPS = 32, 4


@pytest.fixture(scope="module")
def bench():
    from benchmarks.data.streams import build_stream

    return build_stream("mnist5k-split5", seed=0).to_benchmark()


def build(name, plugins=(), **hp):
    torch.manual_seed(0)
    settings = TrainSettings(steps_per_task=STEPS, batch_size=BATCH, head_init="probe",
                             plugins=list(plugins))
    return get_strategy(name).build(create_backbone("vit_nano"),
                                    {**fitting_hparams(name, "vit_nano"), **hp}, settings)


class FirstStep(SupervisedPlugin):
    """Per task, ``look(strategy)`` just before its first update."""

    def __init__(self, look):
        super().__init__()
        self.look, self.seen = look, {}

    def before_training_iteration(self, strategy, **kwargs):
        task = strategy.experience.current_experience
        if task not in self.seen:
            self.seen[task] = self.look(strategy)


class Optimizer(SupervisedPlugin):
    """Every step's optimizer: its type, its groups' rates and parameters."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def before_training_iteration(self, strategy, **kwargs):
        opt = strategy.optimizer
        self.steps.append((type(opt), [g["lr"] for g in opt.param_groups],
                           [{id(p) for p in g["params"]} for g in opt.param_groups],
                           [g["weight_decay"] for g in opt.param_groups]))


def test_registered_values_are_the_paper_form_and_the_search_space_covers_it():
    for name, lr, schedule in (("l2p", 0.03, "constant"), ("dualprompt", 0.03, "constant"),
                               ("coda-prompt", 1e-3, "cosine")):
        info = get_strategy(name)
        hp = info.hparams
        assert (hp["head"], hp["lr"], hp["schedule"]) == ("plain", lr, schedule)
        assert hp["lr_scaling"] == ("none" if name == "coda-prompt" else "linear")
        assert "head" not in info.search_space  # task-id scores would pick the old head
        assert lr in info.search_space["lr"] and len(info.search_space["lr"]) > 1
        assert "head_lr" not in hp  # one group: no separate head rate
    assert get_strategy("dualprompt").hparams["e_length"] == 5  # the CIFAR-scale configuration
    assert not get_strategy("l2p").hparams["batchwise_prompt"]
    with pytest.raises(ValueError, match="head must be one of"):
        build("l2p", head="folded")


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_a_plain_head_per_task_is_the_masked_single_classifier(bench, name):
    """Training task 2 leaves task 1's head bit-identical, and task 2's head gets exactly the
    gradient of one classifier over both tasks' classes with task 1's logits masked."""
    s = build(name)
    s.train(bench.train_stream[0])
    first = {k: v.clone() for k, v in s.model.heads["0"].state_dict().items()}
    s.train(bench.train_stream[1])
    h0, h1 = s.model.heads["0"], s.model.heads["1"]
    assert type(h0) is PlainHead and type(h1) is PlainHead  # never folded or calibrated
    assert all(torch.equal(v, h0.state_dict()[k]) for k, v in first.items())
    assert h1.bias.abs().sum() > 0  # task 2's head trained (it started at bias 0)

    x, y = zip(*[bench.train_stream[1].dataset[i][:2] for i in range(16)], strict=True)
    s.model.eval()
    with torch.no_grad():
        feats = s.model.features(torch.stack(x), 1)
    y = torch.tensor(y)
    weight = torch.cat([h0.weight, h1.weight]).detach().requires_grad_(True)
    bias = torch.cat([h0.bias, h1.bias]).detach().requires_grad_(True)
    k0 = h0.out_features
    logits = F.linear(feats, weight, bias)
    masked = torch.cat([torch.full_like(logits[:, :k0], float("-inf")), logits[:, k0:]], dim=1)
    single = F.cross_entropy(masked, y + k0)
    single.backward()
    per_task = F.cross_entropy(h1(feats), y)
    gw, gb = torch.autograd.grad(per_task, [h1.weight, h1.bias])
    assert torch.allclose(single, per_task)
    assert torch.equal(weight.grad[:k0], torch.zeros_like(weight.grad[:k0]))
    assert torch.equal(bias.grad[:k0], torch.zeros_like(bias.grad[:k0]))
    assert torch.allclose(weight.grad[k0:], gw, atol=1e-7)
    assert torch.allclose(bias.grad[k0:], gb, atol=1e-7)


def test_a_plain_head_is_trunc_normal_with_zero_bias_and_no_standardization():
    torch.manual_seed(0)
    head = PlainHead(500, 100).train()
    w = head.weight.detach()
    assert torch.equal(head.bias, torch.zeros(100))
    assert abs(w.std().item() - 0.02) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert w.abs().max() < 6 * 0.02  # a normal at std 0.02, not a uniform fan-in init
    feats = 3.0 + 5.0 * torch.randn(8, 500)  # far from standardized
    assert torch.equal(head(feats), F.linear(feats, head.weight, head.bias))  # no batch stats
    assert not hasattr(head, "set_statistics")


@pytest.mark.parametrize("head", ["plain", "standardized"])
def test_only_a_standardized_head_starts_from_the_probe(bench, head):
    """With ``head_init="probe"`` a plain head keeps its trunc-normal start (the probe's folded
    weights are large), a standardized one is the probe; the probe reference is recorded for
    both."""
    probe = ProbeHeadPlugin(bench, "probe")

    def look(strategy):
        h = strategy.model.heads["0"]
        return type(h), h.weight.detach().clone(), h.bias.detach().clone()

    first = FirstStep(look)
    build("l2p", plugins=[probe, first], head=head).train(bench.train_stream[0])
    kind, weight, bias = first.seen[0]
    assert 0 in probe.probe_acc and 0 in probe.probe_train_acc
    if head == "plain":
        assert kind is PlainHead
        assert torch.equal(bias, torch.zeros_like(bias)) and weight.abs().max() < 0.2
        assert not torch.allclose(weight, probe.probes[0].coef, atol=1e-3)
    else:
        assert kind is StandardizedHead
        assert torch.equal(weight, probe.probes[0].coef)
        assert torch.equal(bias, probe.probes[0].intercept)


@pytest.mark.parametrize("name", ["l2p", "dualprompt"])
def test_prompts_and_head_share_one_adam_group_at_lr_times_batch_over_256(bench, name):
    record = Optimizer()
    s = build(name, plugins=[record])
    s.train(bench.train_stream[0])
    bb = s.model.backbone
    head = {id(p) for p in s.model.heads["0"].parameters()}
    prompts = ({id(p) for p in bb.shallow_prompts.parameters()} if name == "l2p" else  # pool, keys
               {id(p) for p in [*bb.dualprompt_general.parameters(),  # G-prefix, task 1's expert
                                *bb.dualprompt_experts.task_parameters(0)]})
    assert len(record.steps) == STEPS
    for kind, rates, groups, decay in record.steps:
        assert kind is torch.optim.Adam and decay == [0.0]
        assert rates == [pytest.approx(0.03 * BATCH / 256)]  # constant: every step the same
        assert groups == [prompts | head]


def test_coda_prompt_trains_components_and_head_in_one_adam_group_at_1e3_cosine(bench):
    record = Optimizer()
    s = build("coda-prompt", plugins=[record])
    s.train(bench.train_stream[0])
    coda = s.model.backbone.coda_prompt
    trained = {id(p) for p in [*coda.task_parameters(0), *s.model.heads["0"].parameters()]}
    assert len(record.steps) == STEPS
    for step, (kind, rates, groups, _) in enumerate(record.steps):
        assert kind is torch.optim.Adam and groups == [trained]
        assert rates == [pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * step / STEPS)))]


def test_a_new_dualprompt_expert_starts_as_the_previous_tasks(bench):
    def look(strategy):
        experts = strategy.model.backbone.dualprompt_experts
        return {t: (e.prompts.detach().clone(), e.key.detach().clone())
                for t, e in experts.per_task.items()}

    first = FirstStep(look)
    s = build("dualprompt", plugins=[first])
    s.train(bench.train_stream[0])
    start_0 = first.seen[0]["task_0"][0]
    trained_0 = s.model.backbone.dualprompt_experts.per_task["task_0"].prompts.detach().clone()
    assert not torch.equal(trained_0, start_0)  # task 1's expert trained
    s.train(bench.train_stream[1])
    prompts_1, key_1 = first.seen[1]["task_1"]
    assert torch.equal(prompts_1, trained_0)  # task 2's expert starts as task 1's ended
    assert not torch.equal(key_1, first.seen[1]["task_0"][1])  # its key does not
    experts = s.model.backbone.dualprompt_experts.per_task
    assert torch.equal(experts["task_0"].prompts, trained_0)  # task 1's stays frozen
    assert not torch.equal(experts["task_1"].prompts, trained_0)  # task 2's trained on
    assert experts["task_1"].prompts.data_ptr() != experts["task_0"].prompts.data_ptr()


def test_the_batch_vote_takes_the_most_chosen_ties_to_the_smaller_index():
    chosen = torch.tensor([[0, 3], [3, 1], [1, 3]])  # counts: 3 -> 3, 1 -> 2, 0 -> 1
    assert majority(chosen, 4).tolist() == [[3, 1]] * 3
    assert majority(torch.tensor([[2], [0]]), 3).tolist() == [[0], [0]]  # a tie


def queries_choosing(keys_of, picks):
    """Queries each equal to the key it should choose."""
    return torch.stack([keys_of[i] for i in picks])


@pytest.mark.parametrize("batchwise", [False, True])
def test_l2p_selects_per_sample_or_one_prompt_set_for_the_batch(batchwise):
    pool = L2PPool(size=3, length=2, top_n=1, dim=3, pull_weight=0.1, batchwise=batchwise)
    with torch.no_grad():
        pool.keys.copy_(torch.eye(3))
    q = queries_choosing(torch.eye(3), [1, 1, 2, 0, 1])
    pool.eval().set_query(q)
    prompts = pool.prompts(torch.zeros(5, 4, 3))
    if batchwise:
        assert pool.chosen.tolist() == [[1]] * 5
        assert all(torch.equal(p, pool.pool[1]) for p in prompts)
    else:
        assert pool.chosen.tolist() == [[1], [1], [2], [0], [1]]
        assert torch.equal(prompts[2], pool.pool[2]) and torch.equal(prompts[3], pool.pool[0])


@pytest.mark.parametrize("batchwise", [False, True])
def test_dualprompt_selects_per_sample_or_one_expert_for_the_batch(batchwise):
    experts = ExpertPrefixes(n_layers=1, length=2, dim=3, match_weight=1.0, batchwise=batchwise)
    for t in range(3):
        experts.add_task(t)
    with torch.no_grad():
        for t in range(3):
            experts.per_task[f"task_{t}"].key.copy_(torch.eye(3)[t])
            experts.per_task[f"task_{t}"].prompts.add_(t)  # they started as copies
    q = queries_choosing(torch.eye(3), [2, 0, 2, 2])
    experts.set_task(None)
    experts.eval().set_query(q)
    keys, _ = experts.layer_prefix(0)
    picks = [2, 2, 2, 2] if batchwise else [2, 0, 2, 2]
    assert experts.infer_tasks(q).tolist() == picks
    for b, t in enumerate(picks):
        assert torch.equal(keys[b], experts.per_task[f"task_{t}"].prompts[0, 0])


def test_the_vote_is_a_hyperparameter_of_both_selecting_methods():
    s = build("l2p", batchwise_prompt=True)
    assert s.model.backbone.shallow_prompts.batchwise
    s = build("dualprompt", batchwise_prompt=True)
    assert s.model.backbone.dualprompt_experts.batchwise
    assert not build("dualprompt").model.backbone.dualprompt_experts.batchwise
    assert "batchwise_prompt" not in resolve_hparams("coda-prompt")  # no hard selection
