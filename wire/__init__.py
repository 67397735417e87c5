"""The agent <-> relay wire protocol (``2026-04-bridge-v1``): messages and codec.

Pure data and pure functions, no I/O: the relay and the agent do the socket
work around it. Encode with `encode`; decode with `decode_agent_frame` (on
the relay) or `decode_relay_frame` (on the agent); anything a peer gets
wrong is a `ProtocolError`. See spec/wire-protocol.md.
"""

from .codec import check_protocol_version as check_protocol_version
from .codec import decode_agent_frame as decode_agent_frame
from .codec import decode_relay_frame as decode_relay_frame
from .codec import encode as encode
from .errors import ProtocolError as ProtocolError
from .errors import VersionMismatch as VersionMismatch
from .errors import WireError as WireError
from .limits import AGENT_RELAY_SILENCE_SECS as AGENT_RELAY_SILENCE_SECS
from .limits import CANCEL_GRACE_SECS as CANCEL_GRACE_SECS
from .limits import CAPABILITY_CACHE_TOKENS as CAPABILITY_CACHE_TOKENS
from .limits import CAPABILITY_DRAIN as CAPABILITY_DRAIN
from .limits import CAPABILITY_FLEET as CAPABILITY_FLEET
from .limits import DEFAULT_HEARTBEAT_INTERVAL_SECS as DEFAULT_HEARTBEAT_INTERVAL_SECS
from .limits import DEFAULT_HEARTBEAT_TIMEOUT_SECS as DEFAULT_HEARTBEAT_TIMEOUT_SECS
from .limits import DEFAULT_MAX_RECEIVE_FRAME_BYTES as DEFAULT_MAX_RECEIVE_FRAME_BYTES
from .limits import FORWARDED_HEADERS as FORWARDED_HEADERS
from .limits import MAX_MODELS_PER_WORKER as MAX_MODELS_PER_WORKER
from .limits import MAX_SEND_FRAME_BYTES as MAX_SEND_FRAME_BYTES
from .limits import REFUSED_BACKEND_DOWN as REFUSED_BACKEND_DOWN
from .limits import REFUSED_FLEET_BUSY as REFUSED_FLEET_BUSY
from .limits import REFUSED_HEADER as REFUSED_HEADER
from .limits import filter_headers as filter_headers
from .messages import PROTOCOL_VERSION as PROTOCOL_VERSION
from .messages import U16 as U16
from .messages import U32 as U32
from .messages import U64 as U64
from .messages import AgentToRelay as AgentToRelay
from .messages import Cancel as Cancel
from .messages import CancelReason as CancelReason
from .messages import Error as Error
from .messages import GracefulShutdown as GracefulShutdown
from .messages import Message as Message
from .messages import ModelsRefresh as ModelsRefresh
from .messages import ModelsUpdate as ModelsUpdate
from .messages import OtherReason as OtherReason
from .messages import Ping as Ping
from .messages import Pong as Pong
from .messages import Register as Register
from .messages import RegisterAck as RegisterAck
from .messages import RelayToAgent as RelayToAgent
from .messages import Request as Request
from .messages import ResponseChunk as ResponseChunk
from .messages import ResponseComplete as ResponseComplete
from .messages import TokenCounts as TokenCounts
from .messages import UInt as UInt

__all__ = [
    "AGENT_RELAY_SILENCE_SECS",
    "CANCEL_GRACE_SECS",
    "CAPABILITY_CACHE_TOKENS",
    "CAPABILITY_DRAIN",
    "CAPABILITY_FLEET",
    "DEFAULT_HEARTBEAT_INTERVAL_SECS",
    "DEFAULT_HEARTBEAT_TIMEOUT_SECS",
    "DEFAULT_MAX_RECEIVE_FRAME_BYTES",
    "FORWARDED_HEADERS",
    "MAX_MODELS_PER_WORKER",
    "MAX_SEND_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "REFUSED_BACKEND_DOWN",
    "REFUSED_FLEET_BUSY",
    "REFUSED_HEADER",
    "U16",
    "U32",
    "U64",
    "AgentToRelay",
    "Cancel",
    "CancelReason",
    "Error",
    "GracefulShutdown",
    "Message",
    "ModelsRefresh",
    "ModelsUpdate",
    "OtherReason",
    "Ping",
    "Pong",
    "ProtocolError",
    "Register",
    "RegisterAck",
    "RelayToAgent",
    "Request",
    "ResponseChunk",
    "ResponseComplete",
    "TokenCounts",
    "UInt",
    "VersionMismatch",
    "WireError",
    "check_protocol_version",
    "decode_agent_frame",
    "decode_relay_frame",
    "encode",
    "filter_headers",
]
