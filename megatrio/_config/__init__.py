"""Configuration: the frozen schema (``_schema``), its value parsers (``_parsers``), and loading
from TOML, the environment and command-line flags (``_loading``).

This layer sits above the services: it knows the services it configures and borrows their
vocabulary (:class:`~megatrio.services.logs._levels.LogFormat`, listen addresses); no service
imports it. Other packages import these names from here, never from the private modules.
"""

from ._loading import config_from_json as config_from_json
from ._loading import config_to_json as config_to_json
from ._loading import find_config_file as find_config_file
from ._loading import load_config as load_config
from ._loading import unknown_environment_variables as unknown_environment_variables
from ._schema import CacheConfig as CacheConfig
from ._schema import CacheDriverKind as CacheDriverKind
from ._schema import Config as Config
from ._schema import JobConfig as JobConfig
from ._schema import NonceDriverKind as NonceDriverKind
from ._schema import config_keys as config_keys
