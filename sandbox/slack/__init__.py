"""Slack simulator: the Web API the bot calls, and a client that calls the bot like Slack does.

``SlackSim`` serves the Web API methods the bot uses (plus file upload URLs and response_urls)
over real HTTP, as strictly as Slack; ``SlackClient`` sends signed slash commands and button clicks
to the bot's endpoint; ``SocketModeClient`` delivers them over Socket Mode instead (``socket_mode``).
See ``server``, ``api``, ``blocks``, ``client`` and ``socket_mode`` for the exact behaviour.
"""

from __future__ import annotations

from sandbox.slack.client import AckTimeoutError, SlackClient, SocketModeClient
from sandbox.slack.model import ApiCall, Ephemeral, Message, ResponseUrlPost, UploadedFile
from sandbox.slack.server import SlackSim
from sandbox.slack.socket_mode import NotConnectedError, SocketConnection, SocketEnvelope

__all__ = [
    "AckTimeoutError",
    "ApiCall",
    "Ephemeral",
    "Message",
    "NotConnectedError",
    "ResponseUrlPost",
    "SlackClient",
    "SlackSim",
    "SocketConnection",
    "SocketEnvelope",
    "SocketModeClient",
    "UploadedFile",
]
