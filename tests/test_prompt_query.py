"""The prompt query handed in (models/multitask.py, models/prompts.py): the model computes it once
per forward, with every prompt source off, and hands it to the modules that take it; no hook on
the backbone itself and none that runs a forward; a copy or a pickle keeps its own wiring."""

import copy
import io
from functools import partial

import pytest
import torch

from models.attention import set_dropkey
from models.factory import create_backbone
from models.multitask import MultiTaskViT
from models.prompt_pools import CodaPrefixes, ExpertPrefixes, L2PPool
from models.prompts import (
    PromptSource,
    QueryTaker,
    drop_prompts,
    drop_prompts_after_norm,
    insert_prompts,
    query_features,
)
from strategies import get_strategy
from strategies.registry import TrainSettings, resolve_hparams

QUERYING = ("l2p", "dualprompt", "coda-prompt")
PROMPT_METHODS = (*QUERYING, "vpt")
X = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def build(name, **hp):
    """(an unprompted copy of the backbone, the strategy's model with task 0 added), in
    evaluation mode."""
    torch.manual_seed(0)
    bb = create_backbone("vit_micro").eval()
    unprompted = copy.deepcopy(bb)
    model = get_strategy(name).build(bb, resolve_hparams(name, hp), TrainSettings()).model
    for m in model.parts(bb).task_modules:
        m.add_task(0)
    model.heads["0"] = torch.nn.Linear(bb.num_features, 2)
    return unprompted, model.eval()


class Passes:
    """Every forward of the backbone's blocks (one starts at the patch embedding): per block,
    the tokens entering its attention and the prefix entries put in front of its keys."""

    def __init__(self, bb):
        self.seen = []
        bb.patch_embed.register_forward_hook(lambda *_: self.seen.append([]))
        for block in bb.blocks:
            block.attn.register_forward_hook(
                lambda m, a, o: self.seen[-1].append((a[0].shape[1], m.prefix_keys)))


def record_queries(model) -> list:
    """The queries each query taker of ``model``'s backbone is handed, in call order."""
    handed = []

    def set_query(original, q):
        handed.append(q)
        original(q)

    for m in model.parts(model.backbone).query_takers:
        m.set_query = partial(set_query, m.set_query)
    return handed


@pytest.mark.parametrize("name", QUERYING)
def test_the_query_is_the_unprompted_backbones_features_computed_once(name):
    unprompted, model = build(name)
    bb = model.backbone
    passes, handed = Passes(bb), record_queries(model)
    with torch.no_grad():
        model.forward_all_tasks(X)  # no task id: every method needs the query
    query, prompted = passes.seen
    assert query == [(1 + 16, 0)] * len(bb.blocks)  # no prompt token, no prefix entry
    assert prompted != query
    assert len(handed) == len(model.parts(bb).query_takers)
    assert all(q is handed[0] for q in handed)  # one query for all
    with torch.no_grad():
        own = unprompted.forward_head(unprompted.forward_features(X), pre_logits=True)
    torch.testing.assert_close(handed[0], own, rtol=0, atol=1e-6)
    assert all(m.enabled for m in bb.modules() if isinstance(m, PromptSource))  # back on


def test_the_query_is_computed_in_evaluation_mode_and_restores_every_mode():
    unprompted, model = build("coda-prompt")
    bb = model.backbone
    set_dropkey(bb, 0.5)
    bb.train()
    queries = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        queries.append(query_features(bb, X))
    with torch.no_grad():
        own = unprompted.forward_head(unprompted.forward_features(X), pre_logits=True)
    assert torch.equal(*queries) and not queries[0].requires_grad
    torch.testing.assert_close(queries[0], own, rtol=0, atol=1e-6)
    assert all(m.training for m in bb.modules())


def test_no_query_is_computed_when_no_module_needs_one():
    _, model = build("dualprompt")  # given a task in evaluation, its expert serves
    passes = Passes(model.backbone)
    with torch.no_grad():
        model(X, 0)
    assert len(passes.seen) == 1
    model.train()(X, 0)  # in training the query pulls the expert's key
    assert len(passes.seen) == 3
    _, model = build("vpt")  # no module takes a query
    passes = Passes(model.backbone)
    with torch.no_grad():
        model(X, 0)
    assert len(passes.seen) == 1 and not model.parts(model.backbone).query_takers


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_no_hook_on_the_backbone_and_none_that_runs_a_forward(name):
    _, model = build(name)
    bb = model.backbone
    assert not (bb._forward_pre_hooks or bb._forward_hooks)
    moving = (insert_prompts, drop_prompts, drop_prompts_after_norm)  # they only move tokens
    hooks = [h for m in bb.modules() for h in [*m._forward_pre_hooks.values(),
                                                *m._forward_hooks.values()]]
    assert all(isinstance(h, partial) and h.func in moving for h in hooks)
    assert bool(hooks) == (name in ("l2p", "vpt"))  # prefixes need none
    takers = {type(m) for m in model.parts(bb).query_takers}
    assert takers == {"l2p": {L2PPool}, "dualprompt": {ExpertPrefixes},
                      "coda-prompt": {CodaPrefixes}, "vpt": set()}[name]
    assert all(isinstance(m, QueryTaker) for m in model.parts(bb).query_takers)


def test_l2p_heads_read_the_mean_of_the_prompt_outputs_by_the_models_choice():
    _, model = build("l2p")
    assert model.head_input == "prompts"
    assert build("l2p", pooling="token")[1].head_input == "features"
    with pytest.raises(ValueError, match="head_input must be one of"):
        MultiTaskViT(create_backbone("vit_micro"), head_input="tokens")


def pickled(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", QUERYING)
def test_a_copy_and_a_pickle_use_their_own_prompts(name):
    _, model = build(name)
    with torch.no_grad():
        before = model.forward_all_tasks(X)[0]
        for other in (copy.deepcopy(model), pickled(model)):
            assert torch.equal(other.forward_all_tasks(X)[0], before)
            for m in other.parts(other.backbone).query_takers:
                for p in m.parameters():
                    p.add_(0.5)
            assert not torch.equal(other.forward_all_tasks(X)[0], before)
            assert torch.equal(model.forward_all_tasks(X)[0], before)
