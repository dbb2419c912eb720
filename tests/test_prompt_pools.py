"""L2P, DualPrompt and CODA-Prompt (models/prompt_pools.py, models/prompts.py): prompt choice
and composition on hand-made keys and queries, prefix attention against its formula, the
shallow prompts' path, task inference by expert keys, and the storage bills by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FixedMask

from models.factory import create_backbone
from models.prompt_pools import CodaPrefixes, ExpertPrefixes, L2PPool, orthogonal_rows
from models.prompts import query_features
from strategies import get_strategy
from strategies.registry import TrainSettings, resolve_hparams


def test_l2p_chooses_the_most_similar_keys_and_pulls_them_to_the_query():
    pool = L2PPool(size=4, length=2, top_n=2, dim=3, pull_weight=0.1)
    with torch.no_grad():
        pool.keys.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    q = torch.tensor([[1.0, 0.1, 0.0]])
    pool.train().set_query(q)
    assert pool.chosen.tolist() == [[0, 3]]  # cosines 0.995, 0.774, 0.0995, 0
    prompts = pool.prompts(torch.zeros(1, 5, 3))
    assert torch.equal(prompts, torch.cat([pool.pool[0], pool.pool[3]])[None])
    cos0, cos3 = 1 / math.sqrt(1.01), 1.1 / (math.sqrt(1.01) * math.sqrt(2))
    assert pool.pop_auxiliary_loss().item() == pytest.approx(-0.1 * (cos0 + cos3), rel=1e-6)
    assert pool.pop_auxiliary_loss() is None  # popped once per training forward


def test_dualprompt_uses_the_given_expert_or_the_one_its_key_chooses():
    experts = ExpertPrefixes(n_layers=1, length=2, dim=3, match_weight=1.0)
    for t in (0, 1):
        experts.add_task(t)
    with torch.no_grad():
        experts.per_task["task_0"].key.copy_(torch.tensor([1.0, 0, 0]))
        experts.per_task["task_1"].key.copy_(torch.tensor([0.0, 1, 0]))
    q = torch.tensor([[0.2, 1.0, 0.0], [1.0, 0.0, 0.5]])
    assert experts.infer_tasks(q).tolist() == [1, 0]
    experts.set_task(None)  # no task id: each sample its own expert
    experts.eval().set_query(q)
    keys, values = experts.layer_prefix(0)
    assert torch.equal(keys, torch.stack([experts.per_task["task_1"].prompts[0, 0],
                                          experts.per_task["task_0"].prompts[0, 0]]))
    assert torch.equal(values[1], experts.per_task["task_0"].prompts[0, 1])
    experts.set_task(0)  # given task 0 (training): its expert, its key pulled to the queries
    experts.train().set_query(q)
    assert torch.equal(experts.layer_prefix(0)[0], experts.per_task["task_0"].prompts[0, 0])
    cos = [0.2 / math.sqrt(1.04), 1.0 / math.sqrt(1.25)]
    assert experts.pop_auxiliary_loss().item() == pytest.approx(1 - sum(cos) / 2, rel=1e-6)


def test_coda_prompt_is_the_cosine_weighted_sum_of_its_components():
    coda = CodaPrefixes(n_layers=1, per_task=2, length=2, dim=2)
    coda.add_task(0)
    part = coda.per_task["task_0"]
    with torch.no_grad():
        part.attention.copy_(torch.tensor([[[1.0, 1.0], [1.0, 0.0]]]))
        part.key.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    q = torch.tensor([[2.0, 1.0]])
    # q * A_0 = (2, 1): cos with (1, 0) = 2 / sqrt(5); q * A_1 = (2, 0): cos with (0, 1) = 0
    alpha = coda.weights(q)
    assert alpha[0, 0].tolist() == pytest.approx([2 / math.sqrt(5), 0.0], abs=1e-6)
    coda.set_query(q)
    keys, values = coda.layer_prefix(0)
    expected = 2 / math.sqrt(5) * part.prompt[0, 0]  # (length 2, dim 2): key half, value half
    assert torch.allclose(keys[0], expected[:1]) and torch.allclose(values[0], expected[1:])


def test_a_new_tasks_components_start_orthogonal_to_the_earlier_ones():
    earlier = F.normalize(torch.randn(3, 8), dim=1)
    fresh = orthogonal_rows(earlier, 4)
    assert torch.allclose(fresh @ earlier.T, torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(fresh @ fresh.T, torch.eye(4), atol=1e-5)
    coda = CodaPrefixes(n_layers=2, per_task=3, length=4, dim=8)
    coda.add_task(0)
    coda.add_task(1)
    keys = coda.stacked("key")  # (layers, 6, 8)
    assert torch.allclose(keys @ keys.transpose(1, 2), torch.eye(6).expand(2, 6, 6), atol=1e-5)


class FixedPrefix(torch.nn.Module):
    def __init__(self, keys, values):
        super().__init__()
        self.kv = (keys, values)

    def prefix(self, batch):
        return self.kv


def test_prefix_attention_is_softmax_over_prefix_and_own_keys():
    torch.manual_seed(0)
    attn = create_backbone("vit_nano").blocks[0].attn.eval()  # dim 64, 2 heads
    x = torch.randn(2, 17, 64)
    pk, pv = torch.randn(3, 64), torch.randn(3, 64)
    attn.prefix = FixedPrefix(pk, pv)
    with torch.no_grad():
        out = attn(x)
        q, k, v = attn.qkv(x).reshape(2, 17, 3, 2, 32).permute(2, 0, 3, 1, 4)
        heads = lambda p: p.reshape(1, 3, 2, 32).transpose(1, 2).expand(2, -1, -1, -1)  # noqa: E731
        k, v = torch.cat([heads(pk), k], 2), torch.cat([heads(pv), v], 2)
        manual = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1) @ v
        manual = attn.proj(manual.transpose(1, 2).reshape(2, 17, 64))
    assert torch.allclose(out, manual, atol=1e-5)
    assert attn.always_kept() == 3 + 1  # prefix entries and the class token


def test_a_token_mask_with_a_prefix_still_gives_a_masked_patch_no_attention():
    attn = create_backbone("vit_nano").blocks[0].attn.eval()
    attn.prefix = FixedPrefix(torch.randn(3, 64), torch.randn(3, 64))
    m = torch.ones(16, dtype=torch.bool)
    m[4] = False
    attn.token_mask = FixedMask(m)
    x = torch.randn(2, 17, 64)
    moved = x.clone()
    moved[:, 1 + 4] += 5.0
    others = [i for i in range(17) if i != 5]
    with torch.no_grad():
        assert torch.allclose(attn(moved)[:, others], attn(x)[:, others], atol=1e-5)


def build(name, backbone="vit_micro", **hp):
    torch.manual_seed(0)
    bb = create_backbone(backbone)
    strategy = get_strategy(name).build(bb, resolve_hparams(name, hp), TrainSettings())
    return bb, strategy.model


def test_l2p_prompts_pass_every_block_and_their_mean_is_the_feature():
    bb, model = build("l2p")
    seen, normed = [], []
    for block in bb.blocks:
        block.attn.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    bb.norm.register_forward_pre_hook(lambda m, a: normed.append(a[0]))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        feats = model.eval().features(x, 0)
    prompted = seen[len(seen) - len(bb.blocks):]  # after the query pass (no prompts)
    assert seen[:len(bb.blocks)] == [17] * len(bb.blocks)
    assert prompted == [1 + 5 * 5 + 16] * len(bb.blocks)  # class, 5 prompts x 5 tokens, patches
    norm = F.layer_norm(normed[-1], (96,), bb.norm.weight, bb.norm.bias, bb.norm.eps)
    assert torch.allclose(feats, norm[:, 1:26].mean(1), atol=1e-6)


def test_dualprompt_without_a_task_id_uses_the_expert_its_key_chooses():
    bb, model = build("dualprompt")
    experts = bb.dualprompt_experts
    for t in (0, 1):
        experts.add_task(t)
        model.heads[str(t)] = torch.nn.Linear(bb.num_features, 2)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        q = query_features(bb, x)
        experts.per_task["task_1"].key.copy_(q.mean(0))  # every sample's query points to task 1
        experts.per_task["task_1"].prompts.add_(1.0)  # it started as task 0's: make it differ
        experts.per_task["task_0"].key.copy_(-q.mean(0))
        agnostic = model.forward_all_tasks(x)
        given = model(x, 1)
    assert (q @ q.mean(0)).min() > 0  # the construction holds
    assert torch.allclose(agnostic[1], given, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(model(x, 0), agnostic[0], atol=1e-3)  # task 0's expert differs


def test_the_query_runs_under_the_callers_autocast_and_its_similarities_in_fp32():
    bb, model = build("l2p")
    dtypes = []
    bb.blocks[0].attn.qkv.register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    pool = bb.shallow_prompts
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.eval().features(x, 0)
        q = query_features(bb, x)
        top, sim = pool.choose(q)
    assert dtypes[0] == torch.bfloat16  # the query pass, before the prompted one
    assert torch.equal(pool.chosen, top)  # the model's forward chose by this query
    cos = F.normalize(q.float(), dim=1) @ F.normalize(pool.keys, dim=1).T  # outside autocast
    assert sim.dtype == torch.float32 and torch.equal(sim, cos.gather(1, top))

    coda = CodaPrefixes(n_layers=2, per_task=3, length=4, dim=q.shape[1])
    coda.add_task(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        alpha = coda.weights(q)
    assert alpha.dtype == torch.float32 and torch.equal(alpha, coda.weights(q))

    experts = ExpertPrefixes(n_layers=1, length=2, dim=q.shape[1], match_weight=1.0)
    experts.add_task(0)
    experts.set_task(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        experts.train().set_query(q)
    match = experts.pop_auxiliary_loss()
    key = experts.per_task["task_0"].key
    assert match.dtype == torch.float32  # fp32 up to the summation order (bf16: ~1e-3)
    torch.testing.assert_close(match, (1 - F.normalize(q.float(), dim=1)
                                       @ F.normalize(key, dim=0)).mean())


def test_querycheck_compares_what_each_pool_takes_from_the_query():
    from benchmarks.measure.querycheck import choices

    q = torch.randn(3, 96)
    bb, _ = build("l2p")
    assert torch.equal(choices(bb, q), bb.shallow_prompts.choose(q)[0].sort(dim=1).values)
    bb, _ = build("dualprompt")
    for t in (0, 1):
        bb.dualprompt_experts.add_task(t)
    assert torch.equal(choices(bb, q), bb.dualprompt_experts.closest(q)[:, None])
    bb, _ = build("coda-prompt")
    bb.coda_prompt.add_task(0)
    assert choices(bb, q).shape == (3, 4 * 10) and choices(bb, q).is_floating_point()  # 4 blocks


def test_storage_bills_counted_by_hand():
    bb = create_backbone("vit_micro")  # dim 96, 4 blocks
    d, head = 96, 10 * 97
    pool, keys = get_strategy("l2p").shared_storage(bb, resolve_hparams("l2p"))
    assert (pool.entries, keys.entries) == (10 * 5 * d, 10 * d)
    (only_head,) = get_strategy("l2p").storage(bb, 10, resolve_hparams("l2p"))
    assert only_head.entries == head
    hp = resolve_hparams("dualprompt")  # G at blocks 0-1, E at 2-4: blocks 2 and 3 exist
    expert, key, h = get_strategy("dualprompt").storage(bb, 10, hp)
    assert (expert.entries, key.entries, h.entries) == (2 * 2 * 5 * d, d, head)
    (general,) = get_strategy("dualprompt").shared_storage(bb, hp)
    assert general.entries == 2 * 2 * 5 * d
    components, h = get_strategy("coda-prompt").storage(bb, 10, resolve_hparams("coda-prompt"))
    assert components.entries == 4 * 10 * (8 + 2) * d  # blocks 0-3 of 0-4
