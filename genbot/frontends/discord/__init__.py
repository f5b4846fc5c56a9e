"""The Discord front end: slash commands with streamed replies, admin commands, quotas.

``bot.py`` holds the client and its lifecycle, ``commands.py`` the app commands (``inspect.py``
``/inspect``, ``caption.py`` ``/caption``), ``streaming.py`` the paced message editing and
``views.py`` the Stop button. Everything goes through ``GenbotService``; nothing here touches
storage or torch.
"""

from genbot.frontends.discord.bot import GenbotBot, run_bot

__all__ = ["GenbotBot", "run_bot"]
