"""Build a tiny, randomly initialised Qwen2.5-VL (or Qwen3-VL) checkpoint fully offline.

The folder it writes loads with ``AutoProcessor`` / ``AutoTokenizer`` /
``AutoModelForImageTextToText.from_pretrained`` and with verl's ``hf_tokenizer`` /
``hf_processor``. It stands in for Qwen2.5-VL-3B/7B in tests and CPU smoke runs: same
architecture, special tokens, chat template and processor classes, but ~1M parameters,
a byte-level BPE vocabulary of a few thousand tokens trained on a built-in corpus, and
small image budgets (images become 1-16 visual tokens).

:func:`build_tiny_qwen3vl` does the same for Qwen3-VL (Qwen3-VL-2B/4B-Instruct's architecture and
processor classes, ~0.7M parameters, 16-px patches: one visual token per 32x32 pixels).

CLI: ``python -m recipe.noisygrpo.demo.tiny_model --output-dir DIR [--family qwen2.5-vl|qwen3-vl]
[--seed N] [--overwrite]``
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import time
from dataclasses import dataclass

from verl_ext.task import COT_INSTRUCTION

# Qwen2.5-VL's special tokens, in the order of the real vocabulary (ids 151643..151656 there).
QWEN25VL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2.5-VL-Instruct's chat template: default system turn, ChatML turns, one
# <|vision_start|><|image_pad|><|vision_end|> block per image (the processor expands the
# pad to the image's token count), optional "Picture N: " ids, generation prompt.
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_COLOURS = "red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver"
_SHAPES = "circle square triangle rectangle star ellipse oval hexagon diamond line dot cross arrow heart cube sphere"
_OBJECTS = (
    "cat dog bird car bus truck bicycle person man woman child tree flower house table chair cup bottle "
    "book phone computer ball boat plane train horse cow sheep apple banana orange pizza clock sign road "
    "sky cloud sun water grass wall window door light shadow background foreground object objects image "
    "picture photo scene region corner center top bottom left right middle edge border pixel pixels noise"
)
_WORDS = (
    "the a an of in on at to is are was were be been there here this that these those it its what which "
    "who where when why how many much number count color colour shape size big small large tiny left right "
    "above below next near far inside outside between behind front and or not no yes Yes No true false "
    "answer question think thinking caption analysis detailed process final output first then should "
    "include followed by regarding considering possible assumptions edge cases relevant background "
    "information tags tag related describe description show shows shown see seen look looks visible "
    "contains contain has have with without one two three four five six seven eight nine ten zero "
    "more less most least same different only also because so therefore however image shows a "
    "user assistant system You are helpful assistant please option options choose correct A B C D "
    "hallucination hallucinate real noisy clean blurry clear exist exists present absent is there any "
)
_MORE_WORDS = (
    "about after again against all almost alone along already although always among another anything "
    "around ask asked away back became become before began begin being believe best better both bring "
    "brought building call called came can cannot carry certain change children city close come common "
    "could country course cut day did does doing done down during each early earth either else end enough "
    "even ever every example eye eyes face fact family father feel feet few field find fire follow food "
    "form found friend from full gave get give given go going good got great ground group grow had half "
    "hand hard head hear heard help high hold home horse hour however idea important into just keep kind "
    "knew know known land language last late later learn leave let life like little live long made make "
    "making many may mean means might mind miss money month morning mother mountain move much must name "
    "need never new night nothing now often old once open order other others our out over own page paper "
    "part past people perhaps place plant play point problem put quite rather read ready really reason "
    "remember rest river room round run said saw say school sea second seem seemed sentence set several "
    "she ship short side since sleep some something sometimes song soon sound space stand start state "
    "still stop story street study such sure take taken talk tell than thing things thought through time "
    "today together told too took toward turn under until upon use used usually very walk want watch way "
    "well went while whole will wind without word words work world would write writing year young your "
    "animal animals vehicle vehicles furniture kitchen street building buildings mountain beach forest "
    "snow rain river lake bridge tower castle garden park field farm office store market restaurant "
    "shirt hat shoe shoes bag umbrella glasses jacket dress hair hand hands face smile standing sitting "
    "walking running holding wearing eating playing riding flying swimming looking reading talking "
    "bright dark light heavy wooden metal plastic glass stone round square striped spotted empty full "
    "several multiple single pair group crowd first second third fourth fifth last total estimate "
    "probably likely unlikely certainly clearly appears appear seems seem suggest suggests indicates "
    "therefore thus hence conclude conclusion evidence detail details visual feature features texture "
    "reasoning reason step steps check verify careful carefully observe observed observation identify "
)


@dataclass(frozen=True)
class TinyQwen25VLSpec:
    """Sizes of the tiny checkpoint. Text head_dim = text_hidden_size / text_attention_heads."""

    text_hidden_size: int = 128
    text_attention_heads: int = 4
    text_kv_heads: int = 2
    text_layers: int = 2
    text_intermediate_size: int = 256
    # Temporal/height/width split of the rotary half-dim; must sum to head_dim / 2.
    mrope_section: tuple[int, int, int] = (4, 6, 6)
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 4096
    vision_hidden_size: int = 64
    vision_heads: int = 2
    vision_depth: int = 2
    vision_intermediate_size: int = 128
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    bpe_vocab_size: int = 4096
    vocab_multiple: int = 64
    # Pixel budgets of the image processor: (patch*merge)^2 = 28*28 pixels per visual token.
    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 64 * 28 * 28

    def __post_init__(self) -> None:
        head_dim, remainder = divmod(self.text_hidden_size, self.text_attention_heads)
        if remainder:
            raise ValueError(
                f"text_hidden_size {self.text_hidden_size} is not divisible by heads {self.text_attention_heads}"
            )
        if sum(self.mrope_section) * 2 != head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
        if self.text_attention_heads % self.text_kv_heads:
            raise ValueError("text_attention_heads must be a multiple of text_kv_heads")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError("vision_hidden_size must be divisible by vision_heads")


def training_corpus() -> list[str]:
    """Deterministic built-in corpus (list of lines) the BPE vocabulary is trained on."""
    words = sorted(set(" ".join((_COLOURS, _SHAPES, _OBJECTS, _WORDS, _MORE_WORDS)).split()))
    lines = [COT_INSTRUCTION, "You are a helpful assistant."]
    lines += [f"<think> {w} </think> <answer> {w} </answer>" for w in words]
    lines += [f"There is a {c} {s} in the image." for c in _COLOURS.split() for s in _SHAPES.split()]
    lines += [f"How many {o}s are in the picture? The answer is {n}." for n, o in enumerate(_OBJECTS.split())]
    lines += [f"Is there a {o} in the image? Yes" for o in _OBJECTS.split()]
    lines += [f"Is there a {o} in the image? No" for o in _OBJECTS.split()]
    lines += [" ".join(str(n) for n in range(start, start + 50)) for start in range(0, 1000, 50)]
    lines += [f"{a} + {b} = {a + b}, {a} x {b} = {a * b}." for a in range(13) for b in range(13)]
    lines += ["A. B. C. D. (A) (B) (C) (D) 0.5 1.0 3.14 100% , . ; : ! ? ' \" - ( ) [ ] { } / \\ \n\n"]
    lines += [" ".join(word.capitalize() for word in words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += [" ".join(word.upper() for word in words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += ["".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return lines


def build_tokenizer(spec: TinyQwen25VLSpec):
    """Train a byte-level BPE on :func:`training_corpus` and wrap it as Qwen2's tokenizer class.

    Special tokens get the ids after the BPE vocabulary, as in the real Qwen2.5 vocabulary.
    """
    return _build_qwen_tokenizer(
        bpe_vocab_size=spec.bpe_vocab_size,
        model_max_length=spec.max_position_embeddings,
        special_tokens=QWEN25VL_SPECIAL_TOKENS,
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def _build_qwen_tokenizer(
    *,
    bpe_vocab_size: int,
    model_max_length: int,
    special_tokens: tuple[str, ...],
    chat_template: str,
    plain_added_tokens: tuple[str, ...] = (),
):
    """A Qwen2TokenizerFast over a BPE trained on :func:`training_corpus`.

    ``special_tokens`` (``<|endoftext|>`` first: the pad token) and then ``plain_added_tokens``
    (whole tokens the BPE never splits, decoded like text, e.g. Qwen3's ``<think>``) get the ids
    right after the BPE vocabulary, in the order of the real Qwen vocabulary (151643..).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    # Same splitting as Qwen2Tokenizer, so the trained merges are valid inside it.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_corpus(), trainer=trainer)
    model_state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model_state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_state["merges"]]

    # Qwen order and ids right after the BPE vocabulary, as in the real vocabulary (151643..).
    for token in special_tokens + plain_added_tokens:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(special_tokens[1:]),
        model_max_length=model_max_length,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    if plain_added_tokens:
        # Already in the vocabulary: registering them keeps their ids and stops the BPE splitting them.
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain_added_tokens])
    tokenizer.chat_template = chat_template
    wrong = {t: tokenizer.convert_tokens_to_ids(t) for t in special_tokens + plain_added_tokens}
    wrong = {t: i for t, i in wrong.items() if i != vocab[t]}
    if wrong:
        raise RuntimeError(f"special tokens got unexpected ids {wrong}; check the transformers Qwen2Tokenizer version")
    return tokenizer


def _vision_processors(spec, video_processor_cls, **extra):
    """Qwen2-VL's image processor (which Qwen2.5-VL and Qwen3-VL share) and ``video_processor_cls``
    at the spec's patch, merge and pixel budgets; ``extra``: more settings of both (e.g. mean/std)."""
    from transformers import Qwen2VLImageProcessor

    common = {
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "merge_size": spec.spatial_merge_size,
        **extra,
    }
    # Fresh size dicts: the processors' __init__ mutate a passed-in/class-level dict in place.
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}, **common
    )
    video_processor = video_processor_cls(
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}, **common
    )
    return image_processor, video_processor


def _vocab_and_token_ids(tokenizer, vocab_multiple: int) -> tuple[int, dict[str, int]]:
    """The model's vocabulary size (the tokenizer's, rounded up to ``vocab_multiple``) and its
    bos / eos / pad token ids, as the Qwen-VL checkpoints set them."""
    vocab_size = -(-len(tokenizer) // vocab_multiple) * vocab_multiple
    end_of_text, end_of_turn = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    return vocab_size, {"bos_token_id": end_of_text, "eos_token_id": end_of_turn, "pad_token_id": end_of_text}


def _vision_token_ids(tokenizer) -> dict[str, int]:
    """The config's ids of the image / video placeholder and vision start / end tokens."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    tokens = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    return dict(zip(names, tokenizer.convert_tokens_to_ids(tokens), strict=True))


def build_processor(tokenizer, spec: TinyQwen25VLSpec):
    """Qwen2_5_VLProcessor = Qwen2VL image/video processors with small pixel budgets + tokenizer."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    image_processor, video_processor = _vision_processors(spec, Qwen2VLVideoProcessor)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def build_config(tokenizer, spec: TinyQwen25VLSpec):
    """Qwen2_5_VLConfig whose token ids match ``tokenizer``; vocab rounded up to ``spec.vocab_multiple``."""
    from transformers import Qwen2_5_VLConfig

    vocab_size, ids = _vocab_and_token_ids(tokenizer, spec.vocab_multiple)
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_hidden_size,
        "intermediate_size": spec.text_intermediate_size,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_attention_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.text_layers,
        "use_sliding_window": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "mrope_section": list(spec.mrope_section),
        },
        "tie_word_embeddings": False,
        **ids,
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_heads,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "spatial_merge_size": spec.spatial_merge_size,
        "out_hidden_size": spec.text_hidden_size,
        "window_size": 112,
        # Last block uses full attention, the others windowed, as in the real tower.
        "fullatt_block_indexes": [spec.vision_depth - 1],
        "tokens_per_second": 2,
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=False,
        **ids,
    )
    config.dtype = "float32"
    return config


def build_model(config, seed: int):
    """Random float32 Qwen2_5_VLForConditionalGeneration; the global RNG state is left untouched."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.to(torch.float32).eval()


def build_generation_config(tokenizer):
    from transformers import GenerationConfig

    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return GenerationConfig(bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext)


def _prepare_output_dir(output_dir: pathlib.Path, overwrite: bool) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} exists and is not a directory; pass another --output-dir")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass overwrite=True (--overwrite) or another directory")
        if not (output_dir / "config.json").is_file():
            # Refuse to wipe a folder that does not look like a model checkpoint.
            raise FileExistsError(f"{output_dir} is not empty and holds no config.json; refusing to delete it")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)


def build_tiny_qwen25vl(
    output_dir: str | pathlib.Path,
    *,
    seed: int = 0,
    overwrite: bool = False,
    spec: TinyQwen25VLSpec | None = None,
) -> pathlib.Path:
    """Write a tiny random Qwen2.5-VL checkpoint (config, float32 safetensors, generation
    config, tokenizer, processor, chat template) to ``output_dir`` and return its path.

    The same ``seed`` (and ``spec``) gives byte-identical weights. Nothing is downloaded.
    Raises FileExistsError if ``output_dir`` is non-empty and ``overwrite`` is False.
    """
    spec = spec or TinyQwen25VLSpec()
    output_dir = pathlib.Path(output_dir).expanduser().resolve()
    _prepare_output_dir(output_dir, overwrite)

    tokenizer = build_tokenizer(spec)
    processor = build_processor(tokenizer, spec)
    config = build_config(tokenizer, spec)
    model = build_model(config, seed)
    model.generation_config = build_generation_config(tokenizer)

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


# ------------------------------------------------------------------------------------------------
# Qwen3-VL
# ------------------------------------------------------------------------------------------------

# Qwen3's whole-word tokens after the shared special ones (ids 151657..151668 in the real vocabulary).
# They are added tokens that are not "special": decoding keeps them, as for Qwen3-VL-*-Instruct.
QWEN3VL_PLAIN_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# Qwen3-VL-Instruct's chat template without its tool-calling branches. Unlike Qwen2.5-VL's there
# is no default system turn; images and videos of user turns become
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad), other turns keep text only.
QWEN3VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if message['role'] == 'user' and (content['type'] == 'image' or 'image' in content or 'image_url' in content) %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif message['role'] == 'user' and (content['type'] == 'video' or 'video' in content) %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyQwen3VLSpec:
    """Sizes of the tiny Qwen3-VL checkpoint (~0.7M parameters).

    Architecture as Qwen3-VL-*-Instruct (q/k-norm, interleaved M-RoPE, DeepStack visual features,
    16-px patches merged 2x2 into one token per 32x32 pixels), every dimension shrunk.

    ``logit_scale`` sets the final RMSNorm weight: next-token logits then have a standard deviation
    of about 4 nats instead of 0.16, so the random model's distributions are peaked and depend on
    the image and the positions (a sampled token's probability ranges ~0.001-0.7; giving the image
    tokens 1-D positions changes it by up to ~0.06, another image by ~0.2). With the default init every
    probability is ~1/V, and verl's rollout-vs-actor probability metric could not show a mismatch.
    The embeddings are untied as in Qwen3-VL-8B (2B and 4B tie them): tied, the scaled head mostly
    echoes the input token (probability ~1 for repeating it) and hides the context again.
    """

    text_hidden_size: int = 64
    text_attention_heads: int = 4
    text_kv_heads: int = 2
    text_head_dim: int = 16
    text_layers: int = 2
    text_intermediate_size: int = 128
    # Rotary frequencies per axis (temporal, height, width), interleaved THWTHW..TT as in the real
    # model's [24, 20, 20] for head_dim 128; must sum to head_dim / 2.
    mrope_section: tuple[int, int, int] = (4, 2, 2)
    rope_theta: float = 5_000_000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    logit_scale: float = 25.0
    vision_hidden_size: int = 32
    vision_heads: int = 2
    vision_depth: int = 2
    vision_intermediate_size: int = 64
    # Learned position grid of the vision tower (side^2 entries, bilinearly interpolated per image).
    vision_position_embeddings: int = 64
    # Vision blocks whose output also feeds the first text layers (real models: 3 of 24-27 blocks).
    deepstack_visual_indexes: tuple[int, ...] = (0,)
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    bpe_vocab_size: int = 4096
    vocab_multiple: int = 64
    # Pixel budgets of the image processor: (patch*merge)^2 = 32*32 pixels per visual token.
    # (The released processors allow 65,536 to 16,777,216 pixels, 64 to 16,384 tokens.)
    min_pixels: int = 4 * 32 * 32
    max_pixels: int = 64 * 32 * 32

    def __post_init__(self) -> None:
        if sum(self.mrope_section) * 2 != self.text_head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.text_head_dim // 2}")
        if self.text_attention_heads % self.text_kv_heads:
            raise ValueError("text_attention_heads must be a multiple of text_kv_heads")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError("vision_hidden_size must be divisible by vision_heads")
        if not all(0 <= index < self.vision_depth for index in self.deepstack_visual_indexes):
            raise ValueError(f"deepstack_visual_indexes {self.deepstack_visual_indexes} must be < vision_depth")
        if round(self.vision_position_embeddings**0.5) ** 2 != self.vision_position_embeddings:
            raise ValueError("vision_position_embeddings must be a square (a side x side grid)")


def build_qwen3vl_tokenizer(spec: TinyQwen3VLSpec):
    """The tiny BPE as Qwen3-VL's tokenizer: Qwen2.5-VL's special tokens plus Qwen3's plain added
    tokens (``<think>``, ``</think>``, tool tags), Qwen3-VL's chat template."""
    return _build_qwen_tokenizer(
        bpe_vocab_size=spec.bpe_vocab_size,
        model_max_length=spec.max_position_embeddings,
        special_tokens=QWEN25VL_SPECIAL_TOKENS,
        plain_added_tokens=QWEN3VL_PLAIN_ADDED_TOKENS,
        chat_template=QWEN3VL_CHAT_TEMPLATE,
    )


def build_qwen3vl_processor(tokenizer, spec: TinyQwen3VLSpec):
    """transformers' Qwen3VLProcessor with the image processor Qwen3-VL ships (Qwen2-VL's, 16-px
    patches, mean/std 0.5) and Qwen3-VL's video processor, at the spec's small pixel budgets."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    image_processor, video_processor = _vision_processors(
        spec, Qwen3VLVideoProcessor, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]
    )
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3VL_CHAT_TEMPLATE,
    )


def build_qwen3vl_config(tokenizer, spec: TinyQwen3VLSpec):
    """Qwen3VLConfig whose token ids match ``tokenizer``; vocab rounded up to ``spec.vocab_multiple``."""
    from transformers import Qwen3VLConfig

    vocab_size, ids = _vocab_and_token_ids(tokenizer, spec.vocab_multiple)
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": spec.text_hidden_size,
        "intermediate_size": spec.text_intermediate_size,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_attention_heads,
        "num_key_value_heads": spec.text_kv_heads,
        "head_dim": spec.text_head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": spec.rope_theta,
            "mrope_section": list(spec.mrope_section),
            "mrope_interleaved": True,
        },
        "tie_word_embeddings": spec.tie_word_embeddings,
        **ids,
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_heads,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "spatial_merge_size": spec.spatial_merge_size,
        "out_hidden_size": spec.text_hidden_size,
        "num_position_embeddings": spec.vision_position_embeddings,
        "deepstack_visual_indexes": list(spec.deepstack_visual_indexes),
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **_vision_token_ids(tokenizer),
        tie_word_embeddings=spec.tie_word_embeddings,
        **ids,
    )
    config.dtype = "float32"
    return config


def build_qwen3vl_model(config, seed: int, logit_scale: float = 1.0):
    """Random float32 Qwen3VLForConditionalGeneration, final-norm weight set to ``logit_scale``;
    the global RNG state is left untouched."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():
        model.model.language_model.norm.weight.fill_(logit_scale)
    return model.to(torch.float32).eval()


def build_tiny_qwen3vl(
    output_dir: str | pathlib.Path,
    *,
    seed: int = 0,
    overwrite: bool = False,
    spec: TinyQwen3VLSpec | None = None,
) -> pathlib.Path:
    """Write a tiny random Qwen3-VL checkpoint (config, float32 safetensors, generation config,
    tokenizer, Qwen3VLProcessor, chat template) to ``output_dir`` and return its path.

    The same ``seed`` (and ``spec``) gives byte-identical weights. Nothing is downloaded.
    Raises FileExistsError if ``output_dir`` is non-empty and ``overwrite`` is False.
    """
    spec = spec or TinyQwen3VLSpec()
    output_dir = pathlib.Path(output_dir).expanduser().resolve()
    _prepare_output_dir(output_dir, overwrite)

    tokenizer = build_qwen3vl_tokenizer(spec)
    processor = build_qwen3vl_processor(tokenizer, spec)
    config = build_qwen3vl_config(tokenizer, spec)
    model = build_qwen3vl_model(config, seed, spec.logit_scale)
    model.generation_config = build_generation_config(tokenizer)

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


# --family of the CLI -> builder.
BUILDERS = {"qwen2.5-vl": build_tiny_qwen25vl, "qwen3-vl": build_tiny_qwen3vl}


def folder_size_bytes(path: str | pathlib.Path) -> int:
    return sum(f.stat().st_size for f in pathlib.Path(path).rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random Qwen2.5-VL or Qwen3-VL checkpoint (offline).")
    parser.add_argument("--output-dir", required=True, type=pathlib.Path)
    parser.add_argument("--family", choices=sorted(BUILDERS), default="qwen2.5-vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = BUILDERS[args.family](args.output_dir, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {path} ({folder_size_bytes(path) / 1e6:.2f} MB) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
