# ruff: noqa: E501
"""Offers as real clients write them (Chrome, Firefox, libdatachannel as in OBS's WHIP
output, aiortc), for the SDP checks and the fuzz; addresses, keys and ids are made up."""

from __future__ import annotations

FINGERPRINT = ":".join(f"{b:02X}" for b in range(0x10, 0x30))  # 32 bytes: sha-256 sized


def crlf(text: str) -> str:
    """SDP lines end in CRLF."""
    return "\r\n".join(text.strip().splitlines()) + "\r\n"


CHROME = crlf(f"""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS 9f8b4a0e-7c1d-4a7b-9d5e-1c2b3a4d5e6f
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1
a=candidate:3028571411 1 udp 2122260223 3d6c1e2f-9a4b-4c5d-8e7f-0a1b2c3d4e5f.local 53622 typ host generation 0 network-id 1
a=candidate:842163049 1 udp 1686052607 203.0.113.7 46243 typ srflx raddr 192.168.0.196 rport 46243 generation 0 network-id 1 network-cost 10
a=candidate:1853887674 1 tcp 1518280447 192.168.0.196 9 typ host tcptype active generation 0 network-id 1
a=ice-ufrag:Kx3u
a=ice-pwd:4m1IaMp8Q5AK3bMGy0hGmQ1M
a=ice-options:trickle
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:9f8b4a0e-7c1d-4a7b-9d5e-1c2b3a4d5e6f 35429d94-5637-4686-9ecd-7d0622261ce8
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3570614608 cname:4TOk42mSjXCkVIa6
a=ssrc:3570614608 msid:9f8b4a0e-7c1d-4a7b-9d5e-1c2b3a4d5e6f 35429d94-5637-4686-9ecd-7d0622261ce8
""")

FIREFOX = crlf(f"""
v=0
o=mozilla...THIS_IS_SDPARTA-128.0 5381836584131542003 0 IN IP4 0.0.0.0
s=-
t=0 0
a=sendrecv
a=fingerprint:sha-256 {FINGERPRINT}
a=group:BUNDLE 0
a=ice-options:trickle
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101
c=IN IP4 0.0.0.0
a=candidate:0 1 UDP 2122252543 8a9d7a4b-1c2d-4e5f-9a8b-7c6d5e4f3a2b.local 58433 typ host
a=candidate:1 1 UDP 1686052863 203.0.113.9 58433 typ srflx raddr 0.0.0.0 rport 0
a=candidate:2 1 TCP 2105524479 8a9d7a4b-1c2d-4e5f-9a8b-7c6d5e4f3a2b.local 9 typ host tcptype active
a=sendrecv
a=end-of-candidates
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level
a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid
a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1
a=fmtp:101 0-15
a=ice-pwd:c4f1b1e1e0f8b7e6c0d9d8e3b7a1c2d3
a=ice-ufrag:8f4a2b1c
a=mid:0
a=msid:{{0a6c0e4b-3f2d-4c1b-9a8e-7d6c5b4a3f2e}} {{f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d}}
a=rtcp-mux
a=rtpmap:109 opus/48000/2
a=rtpmap:9 G722/8000/1
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000/1
a=setup:actpass
a=ssrc:2913470133 cname:{{a3c1e5f7-9b2d-4f6a-8c0e-1d3b5f7a9c2e}}
""")

# OBS's WHIP output (libdatachannel): send-only audio and H.264 video, session-level ICE/DTLS
LIBDATACHANNEL = crlf(f"""
v=0
o=rtc 3426172911 0 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=group:LS 0 1
a=msid-semantic:WMS *
a=setup:actpass
a=ice-ufrag:Ai3N
a=ice-pwd:zV0cPf0ZBJ3Hk5Mc8S+Z8q
a=ice-options:ice2,trickle
a=fingerprint:sha-256 {FINGERPRINT}
m=audio 56732 UDP/TLS/RTP/SAVPF 111
c=IN IP4 192.168.1.20
a=mid:0
a=sendonly
a=ssrc:2436473081 cname:DWUt3RzTdLDjEd4F
a=ssrc:2436473081 msid:obs-stream obs-audio
a=msid:obs-stream obs-audio
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1
a=candidate:1 1 UDP 2122317823 192.168.1.20 56732 typ host
a=end-of-candidates
m=video 56732 UDP/TLS/RTP/SAVPF 96
c=IN IP4 192.168.1.20
a=mid:1
a=sendonly
a=ssrc:2436473082 cname:DWUt3RzTdLDjEd4F
a=ssrc:2436473082 msid:obs-stream obs-video
a=msid:obs-stream obs-video
a=rtcp-mux
a=rtpmap:96 H264/90000
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 goog-remb
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1
""")

AIORTC = crlf(f"""
v=0
o=- 4005414730 4005414730 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=audio 44139 UDP/TLS/RTP/SAVPF 96 9 0 8
c=IN IP4 127.0.0.1
a=sendrecv
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:57059428-2d60-45e0-9c74-367a41e9e7b0 750c8f3e-22bf-4e14-8762-bc61d658978d
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:4085797213 cname:bd612aa4-edee-40c7-8221-fd63da330bb3
a=rtpmap:96 opus/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 127.0.0.1 44139 typ host
a=end-of-candidates
a=ice-ufrag:rc5u
a=ice-pwd:igUFOfFW4CIoM50G4K3D46
a=fingerprint:sha-256 {FINGERPRINT}
a=setup:actpass
""")

OFFERS = {"chrome": CHROME, "firefox": FIREFOX, "libdatachannel": LIBDATACHANNEL, "aiortc": AIORTC}
