"""The one registry of Assets, imported by producers (``outlets=``) and consumers (``schedule=``).

URIs are logical (``recsys://zone/name``): the physical location of a zone comes from the
pipeline config and differs per profile, while an Asset's identity must not.
Each event's ``extra`` names the partition it is about (``{"day": "YYYY-MM-DD", ...}``).
"""

from airflow.sdk import Asset

CURATED_EVENTS = Asset(name="recsys_curated_events", uri="recsys://curated/events", group="recsys")
CHAMPION_MODEL = Asset(name="recsys_champion_model", uri="recsys://models/champion", group="recsys")
RECOMMENDATIONS = Asset(name="recsys_recommendations", uri="recsys://recommendations/daily", group="recsys")
