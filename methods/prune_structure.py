"""Structured pruning of Transformers: whole attention heads and feed-forward channels removed.

Importance is the L2 magnitude of what a unit owns (a head: its query, key and value rows and its
output-projection columns; an FFN channel: its row in the first and its column in the second
linear layer); the least important units go and the layers are rebuilt smaller, so the pruned
model runs with fewer parameters and MACs.

Where heads can be removed:

* ``nn.MultiheadAttention`` (the LTSF Transformer, ReCycle): each becomes a
  :class:`HeadSubsetAttention` holding only the kept heads (``nn.MultiheadAttention`` cannot hold
  an inner width other than ``embed_dim``). Each attention module keeps its own heads.
* Attention with a packed ``qkv`` Linear laid out ``[3, heads, head_dim]``, ``n_heads`` /
  ``d_head`` attributes and a ``proj`` (PatchTST's residual attention): the pre-softmax scores
  pass from layer to layer head by head, so the *same* head indices are kept in every layer
  (importance summed over layers); per-layer choices would pair unrelated heads.

FFNs: ``nn.TransformerEncoderLayer``/``DecoderLayer`` (``linear1``/``linear2``) and blocks whose
``ff`` is ``Sequential(Linear, activation, Dropout, Linear)`` (PatchTST).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from joulebench.methods.prune_masks import excluded

TRANSFORMER_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def keep_count(n: int, fraction: float) -> int:
    return min(max(int(round(n * fraction)), 1), n)


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return torch.topk(scores, keep).indices.sort().values


class HeadSubsetAttention(nn.Module):
    """Multi-head attention over a subset of an ``nn.MultiheadAttention``'s heads.

    Called like ``nn.MultiheadAttention`` by the Transformer layers (batch first); returns
    ``(output, None)``. The attributes the Transformer layers inspect say "no packed projection"
    (``in_proj_* = None``, ``_qkv_same_embed_dim = False``), which keeps PyTorch's fused fast
    path (it needs a packed full-width projection) away from it.
    """

    _qkv_same_embed_dim = False
    batch_first = True
    in_proj_weight = None
    in_proj_bias = None

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, out_proj: nn.Linear,
                 head_dim: int, dropout: float) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out_proj = q, k, v, out_proj
        self.head_dim, self.dropout = head_dim, dropout
        self.num_heads = q.out_features // head_dim

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> HeadSubsetAttention:
        if not mha.batch_first:
            raise ValueError("head pruning supports batch_first attention only")
        e = mha.embed_dim
        bias = mha.in_proj_bias
        layers = []
        for i, w in enumerate(qkv_weights(mha)):
            layer = nn.Linear(w.shape[1], e, bias=bias is not None).to(w.device, w.dtype)
            with torch.no_grad():
                layer.weight.copy_(w)
                if bias is not None:
                    layer.bias.copy_(bias[i * e:(i + 1) * e])
            layers.append(layer)
        return cls(*layers, narrow_linear(mha.out_proj), mha.head_dim, mha.dropout)

    def head_scores(self) -> torch.Tensor:
        h, d = self.num_heads, self.head_dim
        rows = sum(m.weight.detach().reshape(h, d, -1).pow(2).sum((1, 2)) for m in (self.q, self.k, self.v))
        cols = self.out_proj.weight.detach().reshape(-1, h, d).pow(2).sum((0, 2))
        return (rows + cols).sqrt()

    def keep_heads(self, heads: torch.Tensor) -> None:
        rows = (heads[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()
        self.q, self.k, self.v = (narrow_linear(m, out_idx=rows) for m in (self.q, self.k, self.v))
        self.out_proj = narrow_linear(self.out_proj, in_idx=rows)
        self.num_heads = len(heads)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None:
            raise NotImplementedError("head-pruned attention does not take a key padding mask")
        b, t, _ = query.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(key)), split(self.v(value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=is_causal and attn_mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1)), None


def qkv_weights(mha: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if mha.in_proj_weight is not None:
        return tuple(mha.in_proj_weight.chunk(3))
    return mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight


def packed_head_scores(attn: nn.Module) -> torch.Tensor:
    """Per-head magnitude of a packed-``qkv`` attention (layout ``[3, heads, head_dim]``)."""
    h, d = attn.n_heads, attn.d_head
    rows = attn.qkv.weight.detach().reshape(3, h, d, -1).pow(2).sum((0, 2, 3))
    cols = out_linear(attn).weight.detach().reshape(-1, h, d).pow(2).sum((0, 2))
    return (rows + cols).sqrt()


def out_linear(attn: nn.Module) -> nn.Linear:
    proj = attn.proj
    return proj[0] if isinstance(proj, nn.Sequential) else proj


def is_packed_attention(m: nn.Module) -> bool:
    return (isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "n_heads")
            and hasattr(m, "d_head") and hasattr(m, "proj"))


def narrow_linear(layer: nn.Linear, out_idx: torch.Tensor | None = None,
                  in_idx: torch.Tensor | None = None) -> nn.Linear:
    """A copy of ``layer`` restricted to the given output rows and/or input columns."""
    w = layer.weight.detach()
    w = w[out_idx] if out_idx is not None else w
    w = w[:, in_idx] if in_idx is not None else w
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias[out_idx] if out_idx is not None else layer.bias)
    return new


def prune_packed_heads(attns: list[nn.Module], fraction: float) -> int:
    """Keep the same heads in every packed attention (scores flow between them); returns heads kept."""
    if not attns:
        return 0
    h, d = attns[0].n_heads, attns[0].d_head
    keep = top_indices(sum(packed_head_scores(a) for a in attns), keep_count(h, fraction))
    cols = (keep[:, None] * d + torch.arange(d)).flatten()
    rows = torch.cat([j * h * d + cols for j in range(3)])
    for a in attns:
        a.qkv = narrow_linear(a.qkv, out_idx=rows)
        if isinstance(a.proj, nn.Sequential):
            a.proj[0] = narrow_linear(a.proj[0], in_idx=cols)
        else:
            a.proj = narrow_linear(a.proj, in_idx=cols)
        a.n_heads = len(keep)
    return len(keep)


def ffn_pairs(model: nn.Module, skip: set[int]) -> list[tuple[nn.Module, str, str]]:
    """(owner, first, second) attribute paths of every FFN (see the module doc)."""
    pairs = []
    for m in model.modules():
        if id(m) in skip:
            continue
        if isinstance(m, TRANSFORMER_LAYERS):
            pairs.append((m, "linear1", "linear2"))
        ff = getattr(m, "ff", None)
        if (isinstance(ff, nn.Sequential) and len(ff) == 4 and isinstance(ff[0], nn.Linear)
                and isinstance(ff[3], nn.Linear)):
            pairs.append((ff, "0", "3"))
    return pairs


def prune_ffn(owner: nn.Module, first: str, second: str, fraction: float) -> int:
    a, b = getattr(owner, first), getattr(owner, second)
    scores = (a.weight.detach().pow(2).sum(1) + b.weight.detach().pow(2).sum(0)).sqrt()
    keep = top_indices(scores, keep_count(a.out_features, fraction))
    setattr(owner, first, narrow_linear(a, out_idx=keep))
    setattr(owner, second, narrow_linear(b, in_idx=keep))
    return len(keep)


def replace_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def prune_structured(model: nn.Module, fraction: float, exclude: list[str]) -> dict[str, int]:
    """Keep ``fraction`` of every attention's heads and every FFN's channels (modules with a path
    component in ``exclude`` are left alone); returns counts of what is kept."""
    named = [(n, m) for n, m in model.named_modules() if not excluded(n, exclude)]
    skip = {id(m) for n, m in model.named_modules() if excluded(n, exclude)}
    heads = ffn = 0
    for name, m in named:
        if isinstance(m, nn.MultiheadAttention):
            m = HeadSubsetAttention.from_mha(m)
            replace_child(model, name, m)
        if isinstance(m, HeadSubsetAttention):
            m.keep_heads(top_indices(m.head_scores(), keep_count(m.num_heads, fraction)))
            heads += m.num_heads
    heads += prune_packed_heads([m for _, m in named if is_packed_attention(m)], fraction)
    for owner, first, second in ffn_pairs(model, skip):
        ffn += prune_ffn(owner, first, second, fraction)
    if heads == 0 and ffn == 0:
        raise RuntimeError("structured pruning found no attention heads or FFN channels to remove")
    return {"heads_kept": heads, "ffn_channels_kept": ffn}
