"""Born-Again Networks for language modelling: an LSTM LM on the Penn Treebank, BAN+L students.

    python -m experiments.ban --config configs/ban_lm.py:ptb --workdir runs/ban_ptb
    python -m experiments.train --config configs/ban_lm.py:ptb --workdir runs/ptb_teacher

Data: Mikolov's ptb.{train,valid,test}.txt in data.path (10k words, <eos> per line). Windows of
seq_len scored tokens after burn_in tokens of unscored context, at random offsets (see
jaxcomp/data/text.py); perplexity is exact per token over the validation stream.

Variants:
  ptb        CPU-feasible: embed 128, one LSTM layer of 128, no dropout, batch 32 x (10 + 35) tokens,
             Adam 3e-3 with cosine decay over 300 steps (~0.34M scored tokens, a third of an epoch); the
             first 20k validation tokens are scored. Teacher, then one BAN+L student (label weight 1).
             (~1 step/s on 2 shared cores: the 10k-way output layer dominates.)
  medium     Zaremba et al.'s medium model (2 x 650, dropout 0.5, 39 epochs of batch 20 x 35),
             SGD 1.0 decayed x0.8 per epoch after epoch 6, gradient clipping 5; for a GPU.
  paper_lstm the BAN paper's PTB LSTM (Table 6: 52M parameters; teacher 75.11 / BAN+L 71.19 validation
             perplexity), for an accelerator: 2 LSTM layers of 1500 (Zaremba et al.'s large model), dropout
             0.65, batch 32 x 35, 40 epochs of SGD from lr 1, multiplied by 0.25 whenever the validation
             perplexity (evaluated every epoch) stops improving, as the paper (optimizer.plateau). Input and
             output embeddings tied (Press & Wolf, as the paper): 51,022,000 parameters (the paper: 52M;
             untied it would be 66.0M).
  paper_cnn_lstm  the BAN paper's PTB CNN-LSTM (Table 6: 19M parameters): Kim et al.'s large
             character-aware model (jaxcomp.models.charcnn): characters of each word (51 ids: PTB's 46
             characters and 5 reserved, words padded to 21 = PTB's longest word, 19 characters, + start and
             end markers), embedding 15, convolutions of widths 1..7 with min(200, 50 w) filters, tanh,
             max-pool, 2 highway layers, 2 LSTM layers of 650, dropout 0.5, 19,367,965 parameters (no
             embeddings to tie: the input is characters). BAN paper's recipe: 40 epochs of SGD at batch
             20 x 35 from lr 2, halved when the validation perplexity improves by less than 0.5 on the
             last epoch's (optimizer.plateau); gradient norm clipped at 5 (Kim et al.). Teacher and BAN+L
             student, 3 seeds.
  tiny       seconds, for tests (the first 20k training tokens).
"""

import ml_collections

VARIANTS = ("ptb", "medium", "paper_lstm", "paper_cnn_lstm", "tiny")
#: the paper's parameter counts (Table 6)
PAPER_PARAMS = {"paper_lstm": 52e6, "paper_cnn_lstm": 19e6}


def get_config(variant: str = "ptb") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        path="../shared/data/ptb",    # folder with ptb.train.txt, ptb.valid.txt, ptb.test.txt
        prefix="ptb.", split="valid",
        batch_size=32, seq_len=35, burn_in=10,
        train_tokens=0,               # > 0: only the first that many training tokens
        val_tokens=20_000,            # > 0: only the first that many validation tokens (0: all)
        seed=0,
    ))
    c.model = ml_collections.ConfigDict(dict(
        arch="lstm",                  # lstm (word embeddings) | char_cnn (Kim et al.'s characters -> CNN -> highway)
        vocab_size=10_000, embed_dim=128, hidden=128, layers=1, dropout=0.0,
        tie_embeddings=False,         # lstm: output projection = the embedding matrix (needs embed_dim == hidden)
        # char_cnn only (Kim et al.'s large model; jaxcomp/models/charcnn.py):
        char_vocab_size=51, max_word_len=21, char_embed=15, kernel_widths=(1, 2, 3, 4, 5, 6, 7),
        filters=(50, 100, 150, 200, 200, 200, 200), highway_layers=2,
    ))
    c.distill = ml_collections.ConfigDict(dict(loss="ce", temperature=4.0, label_weight=1.0, teachers=()))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=3e-3, schedule="cosine", decay_steps=300, decay_rate=0.1, boundaries=(),
        decay_every=0, warmup_steps=50, grad_clip=5.0, l2=0.0,
        # the learning rate cut when the validation metric stalls (jaxcomp.train.plateau_settings); off
        plateau=dict(metric="", factor=0.5, min_delta=0.0, mode="min", reset_steps=()),
    ))
    c.ban = ml_collections.ConfigDict(dict(generations=1, seeds=(0,), loss="ban_label", variants=(),
                                           teacher_model="",
                                           time_limit=0.0))  # seconds for the whole command (0: none); see ban.py
    c.steps = 300
    c.log_every = 50
    c.eval_every = -1                # -1: once, at the last step (set below); experiments/ban.py evaluates itself
    c.checkpoint_every = 300
    c.keep = 1
    c.eval_batch_size = 128
    c.distributed = False

    if variant in ("ptb", ""):
        pass
    elif variant == "medium":
        epoch = 929_589 // (20 * 35)
        c.data.update(batch_size=20, burn_in=35, val_tokens=0)
        c.model.update(embed_dim=650, hidden=650, layers=2, dropout=0.5)
        c.optimizer.update(name="sgd", learning_rate=1.0, momentum=0.0, schedule="piecewise", decay_rate=0.8,
                           boundaries=tuple(epoch * e for e in range(6, 39)), warmup_steps=0)
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 39 * epoch
        c.eval_every, c.log_every = epoch, 200
    elif variant == "paper_lstm":
        epoch = 929_589 // (32 * 35)
        c.data.update(batch_size=32, burn_in=35, val_tokens=0)
        c.model.update(embed_dim=1500, hidden=1500, layers=2, dropout=0.65, tie_embeddings=True)
        c.optimizer.update(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant", warmup_steps=0)
        c.optimizer.plateau.update(metric="perplexity", factor=0.25, min_delta=0.0)  # x0.25 when it stops improving
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 40 * epoch
        c.eval_every, c.log_every = epoch, 200
        c.ban.seeds = (0, 1, 2)
    elif variant == "paper_cnn_lstm":
        epoch = 929_589 // (20 * 35)
        c.data.update(batch_size=20, burn_in=35, val_tokens=0)
        c.model.update(arch="char_cnn", hidden=650, layers=2, dropout=0.5)  # the char_cnn defaults: Kim's large
        c.optimizer.update(name="sgd", learning_rate=2.0, momentum=0.0, schedule="constant", warmup_steps=0,
                           grad_clip=5.0)
        c.optimizer.plateau.update(metric="perplexity", factor=0.5, min_delta=0.5)  # Kim et al.'s rule
        c.steps = c.optimizer.decay_steps = c.checkpoint_every = 40 * epoch
        c.eval_every, c.log_every = epoch, 200
        c.ban.seeds = (0, 1, 2)
    elif variant == "tiny":
        c.data.update(batch_size=8, seq_len=12, burn_in=4, train_tokens=20_000, val_tokens=2_000)
        c.model.update(embed_dim=16, hidden=32)
        c.optimizer.update(decay_steps=30, warmup_steps=0, learning_rate=1e-2)
        c.steps = c.checkpoint_every = 30
        c.log_every = 10
        c.eval_batch_size = 64
    else:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if c.eval_every < 0:
        c.eval_every = c.steps
    return c
