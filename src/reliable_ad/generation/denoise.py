"""A DDIM denoiser whose batch slots each run their own job at their own step.

The stock pipeline moves a whole batch through the timesteps together. Recurrent generation needs more: a
slot whose image is accepted, rejected early or finished takes the next job at once (slot refilling), so the
batch stays full. The UNet and ControlNet take a timestep per sample, and DDIM's update is per sample, so
slots at different steps share one forward pass. With the same seed, prompt and settings a slot gives the
stock StableDiffusionControlNetInpaintPipeline's image (tested). RFFT reuses `predict_noise` and `x0` with
gradients on. Every input is made on the CPU (the job's noise comes from a CPU generator, so a seed gives the
same image on any device) and then moved to the components' device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from numpy.typing import NDArray

from reliable_ad.data.products import Reviewer
from reliable_ad.generation.config import RecurrentConfig
from reliable_ad.generation.preprocess import control_inputs
from reliable_ad.models.generator import GeneratorComponents, load_components


@dataclass
class Job:
    """One attempt at one product."""

    key: str  # the product's id
    attempt: int  # 1 for the first
    seed: int
    prompt: str
    product: NDArray[np.uint8]  # RGBA on the canvas
    caption: str
    negative_prompt: str = ""
    reviewer: Reviewer | None = None  # people's label of the image, where the product's source has people at hand


@dataclass
class Slot:
    job: Job
    latents: torch.Tensor  # 1 x 4 x h x w
    mask: torch.Tensor  # 1 x 1 x h x w, 1 where the background is generated
    masked_latents: torch.Tensor  # 1 x 4 x h x w
    control: torch.Tensor  # 1 x 3 x H x W in [0, 1]
    text: torch.Tensor  # 1 x tokens x width
    uncond: torch.Tensor
    step: int = 0  # denoising steps done
    x0: torch.Tensor | None = None  # the last clean-latent prediction
    extra: dict[str, object] = field(default_factory=dict)


class Denoiser:
    def __init__(
        self,
        components: GeneratorComponents,
        steps: int = 20,
        guidance_scale: float = 7.5,
        controlnet_scale: float = 1.0,
        device: str | torch.device | None = None,
    ) -> None:
        """`device`: where the inputs go; by default the UNet's, where every component must be."""
        self.c = components
        self.device = components.unet.device if device is None else torch.device(device)
        self.guidance = guidance_scale
        self.controlnet_scale = controlnet_scale
        scheduler = DDIMScheduler.from_config(components.scheduler.config)
        scheduler.set_timesteps(steps)
        self.steps = steps
        self.timesteps = scheduler.timesteps.to(self.device)
        self.stride = scheduler.config.num_train_timesteps // steps
        self.alphas = scheduler.alphas_cumprod.to(self.device)
        self.final_alpha = scheduler.final_alpha_cumprod.to(self.device)
        self.scale = components.vae.config.scaling_factor
        self._prompts: dict[str, torch.Tensor] = {}

    @classmethod
    def from_folders(cls, generator: Path, controlnet: Path | None, cfg: RecurrentConfig) -> Denoiser:
        """The generator's denoiser (with another ControlNet if given), set up as `cfg`'s recurrent runs need."""
        return cls(load_components(generator, controlnet), cfg.steps, cfg.guidance_scale, cfg.controlnet_scale)

    # ------------------------------------------------------------------------------------------ setup

    def encode_prompt(self, text: str) -> torch.Tensor:
        if text not in self._prompts:
            tokens = self.c.tokenizer(
                [text],
                padding="max_length",
                max_length=self.c.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)
            with torch.no_grad():
                self._prompts[text] = self.c.text_encoder(tokens)[0]
        return self._prompts[text]

    @torch.no_grad()
    def start(self, job: Job) -> Slot:
        """Noise, mask and conditions of a job, drawn in the stock pipeline's order from the job's seed."""
        inputs = control_inputs(job.product)
        size = job.product.shape[0]
        latent = size // (2 ** (len(self.c.vae.config.block_out_channels) - 1))
        generator = torch.Generator().manual_seed(int(job.seed))
        latents = torch.randn((1, self.c.vae.config.latent_channels, latent, latent), generator=generator)
        image = torch.from_numpy(inputs.init_image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        mask = torch.from_numpy((inputs.inpaint_mask >= 128).astype(np.float32))[None, None]
        masked = image * (mask < 0.5)
        masked_latents = self.c.vae.encode(masked.to(self.device)).latent_dist.sample(generator) * self.scale
        control = torch.from_numpy(inputs.control_image).permute(2, 0, 1)[None].float() / 255.0
        return Slot(
            job=job,
            latents=latents.to(self.device),
            mask=torch.nn.functional.interpolate(mask, size=(latent, latent)).to(self.device),
            masked_latents=masked_latents.to(self.device),
            control=control.to(self.device),
            text=self.encode_prompt(job.prompt),
            uncond=self.encode_prompt(job.negative_prompt),
        )

    # ---------------------------------------------------------------------------------------- stepping

    def timestep(self, step: int) -> int:
        return int(self.timesteps[step])

    def noise_branches(
        self, latents: torch.Tensor, t: torch.Tensor, slots: list[Slot], controlnet: torch.nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional, text-conditioned) noise predictions in one batched pass, control applied to both.

        `controlnet` replaces the components' ControlNet (RFFT compares the tuned and the frozen one).
        """
        controlnet = self.c.controlnet if controlnet is None else controlnet
        mask = torch.cat([s.mask for s in slots])
        masked = torch.cat([s.masked_latents for s in slots])
        control = torch.cat([s.control for s in slots])
        cond = torch.cat([s.text for s in slots])
        uncond = torch.cat([s.uncond for s in slots])
        both = self._unet(
            torch.cat([latents, latents]),
            torch.cat([t, t]),
            torch.cat([mask, mask]),
            torch.cat([masked, masked]),
            torch.cat([control, control]),
            torch.cat([uncond, cond]),
            controlnet,
        )
        noise_uncond, noise_text = both.chunk(2)
        return noise_uncond, noise_text

    def guided(self, noise_uncond: torch.Tensor, noise_text: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance."""
        return noise_uncond + self.guidance * (noise_text - noise_uncond)

    def predict_noise(self, latents: torch.Tensor, t: torch.Tensor, slots: list[Slot]) -> torch.Tensor:
        """Classifier-free-guided noise for a batch of latents at per-sample timesteps `t`."""
        return self.guided(*self.noise_branches(latents, t, slots))

    def _unet(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        masked: torch.Tensor,
        control: torch.Tensor,
        text: torch.Tensor,
        controlnet: torch.nn.Module,
    ) -> torch.Tensor:
        down, mid = controlnet(
            latents,
            t,
            encoder_hidden_states=text,
            controlnet_cond=control,
            conditioning_scale=self.controlnet_scale,
            return_dict=False,
        )
        return self.c.unet(
            torch.cat([latents, mask, masked], dim=1),
            t,
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample

    def x0(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """DDIM's prediction of the clean latents."""
        alpha = self.alphas[t].view(-1, 1, 1, 1)
        return (latents - (1 - alpha).sqrt() * noise) / alpha.sqrt()

    def ddim_update(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One deterministic DDIM step (eta 0), per sample."""
        prev = t - self.stride
        alpha_prev = torch.where(prev >= 0, self.alphas[prev.clamp(min=0)], self.final_alpha).view(-1, 1, 1, 1)
        x0 = self.x0(latents, noise, t)
        return alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * noise

    @torch.no_grad()
    def advance(self, slots: list[Slot]) -> None:
        """One denoising step for every slot, each at its own timestep."""
        if not slots:
            return
        latents = torch.cat([s.latents for s in slots])
        t = torch.tensor([self.timestep(s.step) for s in slots], device=self.device)
        noise = self.predict_noise(latents, t, slots)
        x0 = self.x0(latents, noise, t)
        updated = self.ddim_update(latents, noise, t)
        for k, slot in enumerate(slots):
            slot.latents = updated[k : k + 1]
            slot.x0 = x0[k : k + 1]
            slot.step += 1

    def done(self, slot: Slot) -> bool:
        return slot.step >= self.steps

    # ---------------------------------------------------------------------------------------- decoding

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], B x 3 x H x W (differentiable; wrap in no_grad when not needed)."""
        return (self.c.vae.decode(latents / self.scale).sample / 2 + 0.5).clamp(0, 1)

    @staticmethod
    def paste(images: torch.Tensor, slots: list[Slot]) -> torch.Tensor:
        """Blend each slot's product back over its image through the product's alpha (differentiably)."""
        products = torch.from_numpy(np.stack([s.job.product for s in slots])).to(images.device)
        alpha = products[..., 3:4].permute(0, 3, 1, 2).float() / 255.0
        rgb = products[..., :3].permute(0, 3, 1, 2).float() / 255.0
        return images * (1 - alpha) + rgb * alpha

    @torch.no_grad()
    def images(self, latents: torch.Tensor, slots: list[Slot]) -> list[NDArray[np.uint8]]:
        """The finished pictures of `latents`: decoded, product pasted back, as uint8 RGB arrays."""
        return self.to_uint8(self.paste(self.decode(latents), slots))

    @staticmethod
    def to_uint8(images: torch.Tensor) -> list[NDArray[np.uint8]]:
        array = (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return list(array)
