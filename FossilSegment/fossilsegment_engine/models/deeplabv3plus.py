"""DeepLab v3+ with one or two decoder skip connections and an optional "ASPP concatenated" variant.

Yu et al. 2022 ("CT Segmentation of Dinosaur Fossils by Deep Learning") found DeepLab v3+ with a MobileNet v1
encoder and **two** decoder skip connections best (their Table 2; ours: docs/benchmarks/table2.md). smp's
``DeepLabV3Plus`` has one skip (stride 4). This module subclasses smp's decoder and model so the encoder, ASPP,
separable convolutions, segmentation head and ``encoder_weights=None`` behave exactly as in smp; only the fusion
path differs:

* ``skips=1`` (smp's layout, identical state-dict keys): ASPP (stride 16) → ×4 → concat stride-4 skip
  (1×1 conv, 48 ch) → separable 3×3 conv.
* ``skips=2``: ASPP (stride 16) → ×2 → concat stride-8 skip (1×1 conv, 32 ch) → separable 3×3 conv →
  ×2 → concat stride-4 skip (1×1 conv, 48 ch) → separable 3×3 conv. The head then upsamples ×4.
* ``aspp_concat=True`` (our reading of the paper's "ASPP concatenated"): the ASPP output is concatenated
  with (not replaced by) the encoder's deepest feature map, and the separable 3×3 conv that follows ASPP
  reduces that concatenation back to ``out_channels`` before the decoder fuses the skips.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from segmentation_models_pytorch import DeepLabV3Plus
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder, SeparableConv2d
from torch import nn

#: Channels of the reduced stride-8 skip (the stride-4 skip keeps smp's/the paper's 48).
STRIDE8_SKIP_CHANNELS = 32
#: Index of the stride-4 / stride-8 feature map in an smp encoder's output list (index 0 is the input).
STRIDE4_INDEX = 2
STRIDE8_INDEX = 3


def _conv_bn_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU())


class DeepLabV3PlusSkipsDecoder(DeepLabV3PlusDecoder):
    """smp's DeepLab v3+ decoder with ``skips`` ∈ {1, 2} skip connections and optional ASPP concatenation.

    Attributes beyond smp's (``aspp``, ``up``, ``block1`` = stride-4 reduction, ``block2`` = stride-4 fusion):
    ``block_s8`` (stride-8 1×1 reduction) and ``fuse_s8`` (stride-8 separable 3×3 fusion), present only with
    two skips.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_depth: int,
        out_channels: int = 256,
        atrous_rates: Iterable[int] = (12, 24, 36),
        output_stride: int = 16,
        aspp_separable: bool = True,
        aspp_dropout: float = 0.5,
        skips: int = 2,
        aspp_concat: bool = False,
    ) -> None:
        if skips not in (1, 2):
            raise ValueError(f"skips must be 1 or 2, got {skips}")
        if skips == 2 and (encoder_depth < 4 or output_stride != 16):
            raise ValueError("two skip connections need encoder_depth >= 4 and output stride 16")
        super().__init__(
            encoder_channels=encoder_channels,
            encoder_depth=encoder_depth,
            out_channels=out_channels,
            atrous_rates=atrous_rates,
            output_stride=output_stride,
            aspp_separable=aspp_separable,
            aspp_dropout=aspp_dropout,
        )
        self.skips = skips
        self.aspp_concat = aspp_concat
        if aspp_concat:
            # aspp = Sequential(ASPP, SeparableConv2d, BN, ReLU): widen the conv after ASPP to take
            # [ASPP output, deepest encoder features].
            self.aspp[1] = SeparableConv2d(
                out_channels + encoder_channels[-1], out_channels, kernel_size=3, padding=1, bias=False
            )
        if skips == 2:
            self.up = nn.Upsample(mode="bilinear", scale_factor=2, align_corners=True)
            self.block_s8 = _conv_bn_relu(
                nn.Conv2d(encoder_channels[STRIDE8_INDEX], STRIDE8_SKIP_CHANNELS, kernel_size=1, bias=False),
                STRIDE8_SKIP_CHANNELS,
            )
            self.fuse_s8 = _conv_bn_relu(
                SeparableConv2d(
                    out_channels + STRIDE8_SKIP_CHANNELS, out_channels, kernel_size=3, padding=1, bias=False
                ),
                out_channels,
            )

    def _context(self, deepest: torch.Tensor) -> torch.Tensor:
        """ASPP features of the deepest map (concatenated with it first when ``aspp_concat``)."""
        if not self.aspp_concat:
            return self.aspp(deepest)
        x = self.aspp[0](deepest)
        x = torch.cat([x, deepest], dim=1)
        for module in list(self.aspp)[1:]:
            x = module(x)
        return x

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Fuse the encoder's feature pyramid into stride-4 decoder features."""
        x = self.up(self._context(features[-1]))
        if self.skips == 2:
            x = self.fuse_s8(torch.cat([x, self.block_s8(features[STRIDE8_INDEX])], dim=1))
            x = self.up(x)
        x = torch.cat([x, self.block1(features[STRIDE4_INDEX])], dim=1)
        return self.block2(x)


class FossilDeepLabV3Plus(DeepLabV3Plus):
    """smp ``DeepLabV3Plus`` (output stride 16, separable ASPP at rates 12/24/36) with our decoder.

    ``decoder_skips=1, aspp_concat=False`` is exactly smp's model (same state-dict keys).
    """

    def __init__(
        self,
        encoder_name: str = "tu-mobilenetv1_100",
        encoder_depth: int = 5,
        encoder_weights: str | None = None,
        decoder_channels: int = 256,
        decoder_atrous_rates: Iterable[int] = (12, 24, 36),
        in_channels: int = 1,
        classes: int = 2,
        decoder_skips: int = 2,
        aspp_concat: bool = False,
    ) -> None:
        super().__init__(
            encoder_name=encoder_name,
            encoder_depth=encoder_depth,
            encoder_weights=encoder_weights,
            encoder_output_stride=16,
            decoder_channels=decoder_channels,
            decoder_atrous_rates=decoder_atrous_rates,
            decoder_aspp_separable=True,
            in_channels=in_channels,
            classes=classes,
        )
        self.decoder = DeepLabV3PlusSkipsDecoder(
            encoder_channels=self.encoder.out_channels,
            encoder_depth=encoder_depth,
            out_channels=decoder_channels,
            atrous_rates=decoder_atrous_rates,
            output_stride=16,
            aspp_separable=True,
            aspp_dropout=0.5,
            skips=decoder_skips,
            aspp_concat=aspp_concat,
        )
        self.name = f"deeplabv3plus{decoder_skips}skip{'-asppcat' if aspp_concat else ''}-{encoder_name}"
