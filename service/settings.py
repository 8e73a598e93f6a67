"""The relay's configuration: the one place where settings (``PNR_*`` variables) are read."""

from __future__ import annotations

import importlib.util
import os
import ssl
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.runtime import DEFAULT_MODEL
from service.directory import parse_table_address

MAX_PROCESSES = 64  # relay nodes ``serve`` starts on one host


class IceServer(BaseModel):
    """One STUN or TURN server, as in the WebRTC ``RTCIceServer`` dictionary."""

    urls: str
    username: str | None = None
    credential: SecretStr | None = None


class Settings(BaseSettings):
    """Relay settings; every field can be set as ``PNR_<FIELD>`` (lists and objects as JSON)."""

    # an empty variable (compose's `PNR_X: ""`) means "not set", never "set to nothing"
    model_config = SettingsConfigDict(env_prefix="PNR_", extra="ignore", env_ignore_empty=True)

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
    ice_gather_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description="how long a join waits for STUN/TURN servers' candidates (a server that "
        "is down delays each join by this much; aioice alone waits 5 s)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="web origins allowed to call signaling and control from another site "
        "(comma-separated; e.g. a WHIP client page); empty: same origin only",
    )
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="reverse proxies (addresses or networks, comma-separated; '*': any) whose "
        "X-Forwarded-For/-Proto name the real client; empty: those headers are ignored",
    )
    tls_cert_file: Path | None = Field(
        None, description="serve HTTPS with this PEM certificate (chain); needs tls_key_file"
    )
    tls_key_file: Path | None = Field(None, description="the certificate's PEM private key")
    max_rooms: int = Field(100, ge=1)
    max_participants_per_room: int = Field(16, ge=1)
    auto_create_rooms: bool = True
    empty_room_ttl_seconds: float = Field(
        300.0, gt=0, description="a room nobody is in (opened by PUT, or emptied) closes then"
    )
    max_pending_peers: int = Field(
        128, ge=1, description="joins not yet connected, in all (503 pending_full beyond)"
    )
    max_pending_per_address: int = Field(
        16, ge=1, description="joins not yet connected from one client address (429 beyond)"
    )
    signaling_rate_per_second: float = Field(
        5.0, ge=0, description="signaling requests per second per client address (0: no limit)"
    )
    signaling_burst: int = Field(
        20, ge=1, description="signaling requests one address may make at once (the bucket)"
    )
    fd_reserve: int = Field(
        64, ge=0, description="joins are refused (503) once fewer file descriptors are left"
    )
    token_secret: SecretStr | None = Field(
        None, description="when set, joins need an HMAC token naming the room"
    )
    admin_token: SecretStr | None = Field(
        None, description="when set, room control (GET/PUT /rooms…) needs this bearer token"
    )
    model_path: Path = DEFAULT_MODEL
    two_hop_model: bool = Field(
        True,
        description="run a 20 ms packet's two hops in one call of the model's two-hop graph "
        "(NAME-2hop.onnx beside the model, shipped with it) when there is one; false: one call "
        "per hop, the same audio for more CPU",
    )
    processes: int = Field(
        0,
        ge=0,
        le=MAX_PROCESSES,
        description="relay nodes on ports PORT…PORT+N-1 sharing one directory, rooms placed by "
        "load; 0: one per usable core (the CPU affinity, capped by a cgroup CPU limit rounded "
        "down; one when PORT is 0), each then pinned to its own core unless a quota grants them",
    )
    worker_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="0: enhance on the event loop thread, which then takes turns with the "
        "loop's other work instead of being preempted by it (a node on one core, as `serve` "
        "starts them); N: N enhancement threads beside the loop, each batching its own "
        "speakers (a node given several cores)",
    )
    realtime_priority: int = Field(
        0,
        ge=0,
        le=99,
        description="run the relay's threads under SCHED_FIFO at this priority, so nothing "
        "else on their core preempts them and its threads take turns instead of preempting "
        "each other (0: the normal scheduler; needs root or CAP_SYS_NICE)",
    )
    batch_clock_ms: float = Field(
        10.0,
        ge=0,
        le=10,
        description="the longest an enhancement shard (the event loop or a thread) holds a "
        "frame to batch it: it waits only "
        "when at least two other speakers' frames are due within this time, and only until the "
        "last of them is, then enhances all that are ready in one model call per packet (0: never "
        "wait, a frame goes at once with whatever else is queued)",
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="the relay's event loop: uvloop (libuv) or asyncio's own; auto: uvloop "
        "where installed",
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
    mix_align_margin_ms: float = Field(
        4.0,
        ge=0,
        le=10,
        description="when a talk spurt starts in a quiet room, its 20 ms mixing clock moves to "
        "tick this long after the talker's frames come in, so that they wait little and none "
        "misses its tick; it keeps that phase while anyone is heard (0: the clock keeps the "
        "phase it started with)",
    )
    jitter_buffer_packets: int = Field(
        0,
        ge=0,
        le=15,
        description="newer packets that may wait behind a missing one before it is concealed "
        "(the receive buffer's only delay; 0: conceal at the next packet, with the FEC it "
        "carries, so a loss leaves no longer gap than itself; a packet reordered past its "
        "successor is then concealed rather than waited for)",
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
    opus_dtx: bool = Field(
        True,
        description="send no packets to a listener whose mix is silent (a DTX packet, then a "
        "refresh every 400 ms, as WebRTC's Opus DTX; receivers play comfort noise)",
    )
    voice_activity_rule: Literal["kept_snr", "gain"] = Field(
        "kept_snr",
        description="how a frame counts as speech (service/voice_activity.py): kept_snr, the "
        "energy the model's gains keep against the noise they remove, with a 600 ms hangover "
        "once confirmed (40 ms otherwise); gain, the mean gain above "
        "voice_activity_threshold, with a 500 ms hangover. Frames of a speaker not speaking "
        "are left out of the mix, so listeners of the same talkers share one encode",
    )
    voice_activity_threshold: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="the gain rule's mean model gain above which a frame is speech (0: every "
        "frame is mixed, with either rule)",
    )
    default_enhance: bool = True
    default_attenuation_limit_db: float | None = Field(None, ge=0)
    default_postfilter: bool = True
    # ---- scale-out: nodes sharing a directory (service/directory.py, service/node.py) ----
    redis_url: SecretStr | None = Field(
        None,
        description="Redis holding the room → node directory shared by every node, e.g. "
        "redis://redis:6379/0; unset: this process keeps its own (one node)",
    )
    shared_directory: SecretStr | None = Field(
        None,
        description="AUTHKEY@HOST:PORT of the directory `serve --processes N` shares among its "
        "nodes (set by serve itself)",
    )
    parent_pid: int | None = Field(
        None,
        description="set by `serve` for the nodes it starts (not set by hand): a node drains "
        "and exits when that process is gone, even killed",
    )
    public_url: str | None = Field(
        None,
        description="this node's signaling base URL as other nodes and redirected clients "
        "reach it; unset: http://HOST:PORT (127.0.0.1 for a wildcard host)",
    )
    node_id: str | None = Field(
        None, max_length=64, description="this node's name in the directory; unset: host-random"
    )
    directory_lease_seconds: float = Field(
        6.0,
        ge=0.5,
        le=10.0,
        description="a node's stats and room leases lapse this long after its last heartbeat",
    )
    directory_heartbeat_seconds: float = Field(
        2.0, gt=0, description="how often a node renews its leases and publishes its stats"
    )
    node_max_cpu_percent: float | None = Field(
        None,
        gt=0,
        description="above this CPU (% of one core) the node takes no new rooms; unset: no limit",
    )

    @field_validator("event_loop")
    @classmethod
    def _check_event_loop(cls, value: str) -> str:
        if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("uvloop is not installed (pip install uvloop), or choose auto")
        return value

    @field_validator("token_secret", "admin_token")
    @classmethod
    def _refuse_empty_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("an empty secret would let anyone in: give one, or leave it unset")
        return value

    @model_validator(mode="after")
    def _refuse_empty_secret_variables(self) -> Settings:
        # empty variables are ignored, but an empty secret variable is a mistake worth stopping
        # for: the operator meant tokens on, and they would silently be off
        for name in ("token_secret", "admin_token"):
            variable = f"PNR_{name.upper()}"
            if any(k.upper() == variable and not v.strip() for k, v in os.environ.items()):
                raise ValueError(f"{variable} is set but empty: give a secret, or unset it")
        return self

    @field_validator("ice_host_addresses", "cors_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_tls_files(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("PNR_TLS_CERT_FILE and PNR_TLS_KEY_FILE must be given together")
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(
                    f"cannot serve TLS with PNR_TLS_CERT_FILE={self.tls_cert_file} and "
                    f"PNR_TLS_KEY_FILE={self.tls_key_file}: {error}"
                ) from error
        return self

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("the public URL is http(s)://HOST[:PORT]")
        return value

    @field_validator("shared_directory")
    @classmethod
    def _check_shared_directory(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_table_address(value.get_secret_value())  # ValueError if it is not one
        return value

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Self:
        if self.directory_heartbeat_seconds * 2 > self.directory_lease_seconds:
            raise ValueError("directory_heartbeat_seconds must be at most half the lease")
        return self
