"""The relay's configuration: the one place where settings (``PNR_*`` variables) are read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.runtime import DEFAULT_MODEL


class IceServer(BaseModel):
    """One STUN or TURN server, as in the WebRTC ``RTCIceServer`` dictionary."""

    urls: str
    username: str | None = None
    credential: SecretStr | None = None


class Settings(BaseSettings):
    """Relay settings; every field can be set as ``PNR_<FIELD>`` (lists and objects as JSON)."""

    model_config = SettingsConfigDict(env_prefix="PNR_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    ice_servers: list[IceServer] = Field(
        default_factory=list, description="STUN/TURN servers for the server's peers (none)"
    )
    ice_host_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="only gather host candidates on these addresses (comma-separated); "
        "empty: every interface",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="web origins allowed to call signaling and control from another site "
        "(comma-separated; e.g. a WHIP client page); empty: same origin only",
    )
    max_rooms: int = Field(100, ge=1)
    max_participants_per_room: int = Field(16, ge=1)
    auto_create_rooms: bool = True
    token_secret: SecretStr | None = Field(
        None, description="when set, joins need an HMAC token naming the room"
    )
    admin_token: SecretStr | None = Field(
        None, description="when set, room control (GET/PUT /rooms…) needs this bearer token"
    )
    model_path: Path = DEFAULT_MODEL
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="relay processes behind one address (rooms pinned to one each); 1: one",
    )
    worker_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="enhancement threads, each batching its own speakers; one batches best, "
        "and a process's event loop saturates before one thread does (more cores: processes)",
    )
    batch_deadline_ms: float = Field(
        0.0,
        ge=0,
        le=10,
        description="how long an enhancement thread waits for more speakers' frames to batch "
        "(0: only what is already queued; a lone speaker is never held back)",
    )
    log_format: Literal["plain", "json"] = "plain"
    log_level: str = "INFO"
    max_body_bytes: int = Field(65536, ge=1024, description="largest accepted signaling body")
    connect_timeout_seconds: float = Field(
        20.0, gt=0, description="a peer that has not connected by then is removed"
    )
    media_timeout_seconds: float = Field(
        10.0, gt=0, description="a connected peer that sends no audio for this long is removed"
    )
    drain_seconds: float = Field(
        10.0, ge=0, description="on SIGTERM, how long calls may go on before they are closed"
    )
    max_queued_frames: int = Field(
        3, ge=1, description="frames of one speaker waiting for enhancement before pass-through"
    )
    mix_buffer_frames: int = Field(
        3, ge=1, description="enhanced frames one speaker may have waiting for the mixer"
    )
    jitter_buffer_packets: int = Field(
        1,
        ge=0,
        le=15,
        description="newer packets that may wait behind a missing one before it is given up "
        "(the receive buffer's only delay; 0: none, no reordering tolerated)",
    )
    aiortc_jitter_buffer: bool = Field(
        False, description="use aiortc's own audio jitter buffer (4 packets, about 80 ms)"
    )
    opus_bitrate: int = Field(48000, ge=6000, le=510000, description="bits/s sent to each listener")
    opus_complexity: int = Field(5, ge=0, le=10, description="Opus encoder complexity")
    opus_channels: int = Field(1, ge=1, le=2, description="1: mono (the mix is mono)")
    opus_application: Literal["lowdelay", "voip", "audio"] = Field(
        "lowdelay", description="Opus mode: lowdelay (CELT only, least delay), voip or audio"
    )
    default_enhance: bool = True
    default_attenuation_limit_db: float | None = Field(None, ge=0)
    default_postfilter: bool = True

    @field_validator("ice_host_addresses", "cors_origins", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
