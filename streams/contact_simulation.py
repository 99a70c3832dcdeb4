"""Simulated debtors' contact behaviour: the local hours they answer calls in, the channels they answer on.

Simulation only (the benchmarks of the contact guard, ``bench/contacts.py``): nothing here is
used to contact real debtors. Each :class:`ContactDebtor` has

- a **true answer probability per cell** (weekday or weekend x eight 3-hour bands of local
  time, the cells of :func:`streams.answer_rates.cell_of`), drawn from one of the portfolio
  :data:`SHAPES`: ``peaked`` (one good band), ``bimodal`` (two), ``flat`` (bands a few points
  apart), ``weekend_shift`` (evenings on weekdays, late mornings at the weekend) and
  ``workers_retirees`` (60% workers reachable before and after work, 40% retirees in the day);
  ``mixed`` draws every debtor's shape from these five;
- a **time zone** (:data:`ZONES`, with and without DST, northern and southern), told to the
  service on a ``contact_preference_set`` or on its ``claim_opened``;
- a **response probability per other channel**, one of them (or the call) its favourite;
- optionally **preferences** set during the plan: inconvenient hours (the band it answers
  least in) or an opt-out of SMS or e-mail.

The closed loop these debtors are contacted in (the runner, the dialer) is
:mod:`streams.contact_loop`.

Assumptions, stated: answer probabilities do not change with repeated calls; a response leads
to a payment with probability ``PAY_AFTER_RESPONSE`` times a factor that falls with the
contacts made so far (:data:`CONTACT_FATIGUE`, the relative success rate by number of contacts
in the UCI Bank Marketing calls: 45,211 phone contacts, Moro et al. 2014), 0 to 3 days later;
debtors go on being contacted after paying (the metric is the first payment).

>>> debtors = draw_debtors("peaked", 3, seed=1)
>>> [d.shape for d in debtors], len(debtors[0].answer)
(['peaked', 'peaked', 'peaked'], 16)
>>> debtors[0] == draw_debtors("peaked", 3, seed=1)[0]
True
>>> allowed = HourMask.between(8, 21)
>>> band = debtors[0].true_best_band(weekend=False, allowed=allowed)
>>> all(debtors[0].answer[band] >= debtors[0].answer[b] for b in range(3, 7))
True

See Also
--------
streams.contact_loop : the closed loop (runner and simulated dialer) over these debtors.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from debtor_segments.streams.answer_rates import BAND_HOURS, cell_of
from debtor_segments.streams.local_time import HourMask, local_datetime, zone

__all__ = [
    "CONTACT_FATIGUE",
    "PAY_AFTER_RESPONSE",
    "SHAPES",
    "ZONES",
    "ContactDebtor",
    "draw_debtors",
    "fatigue",
]

_BANDS = 24 // BAND_HOURS
#: The portfolio shapes a debtor's hours are drawn from (``mixed``: each debtor one of them).
SHAPES: tuple[str, ...] = ("peaked", "bimodal", "flat", "weekend_shift", "workers_retirees")
#: Time zones and their shares; all of them have local hours starting on :00 or :30 UTC.
ZONES: dict[str, float] = {
    "Europe/Amsterdam": 0.35,
    "Europe/London": 0.10,
    "Europe/Lisbon": 0.05,
    "Europe/Helsinki": 0.05,
    "America/New_York": 0.12,
    "America/Chicago": 0.06,
    "America/Los_Angeles": 0.07,
    "America/Sao_Paulo": 0.05,
    "Asia/Kolkata": 0.05,
    "Australia/Sydney": 0.10,
}
#: Favourite channel shares; a debtor whose favourite is not the call answers calls less.
_FAVOURITES = {"call": 0.40, "sms": 0.25, "email": 0.20, "whatsapp": 0.15}
#: Chance that one response leads to a payment (before the contact fatigue below).
PAY_AFTER_RESPONSE = 0.25
#: (contacts so far at least, relative success): UCI Bank Marketing, success rate by number of
#: contacts in the campaign over that of clients contacted once (14.6%), bins 1, 2-3, 4-5,
#: 6-8, 9-11, 12+ (17,544 / 18,026 / 5,286 / 2,566 / 794 / 995 contacts).
CONTACT_FATIGUE: tuple[tuple[int, float], ...] = ((1, 1.0), (2, 0.767), (4, 0.591), (6, 0.457), (9, 0.440), (12, 0.213))
_NIGHT = 0.02


def fatigue(contacts: int) -> float:
    """Relative chance that a response after ``contacts`` contacts leads to a payment.

    >>> fatigue(1), fatigue(3), fatigue(40)
    (1.0, 0.767, 0.213)
    """
    factor = 1.0
    for at_least, value in CONTACT_FATIGUE:
        if contacts >= at_least:
            factor = value
    return factor


@dataclass(frozen=True, slots=True)
class ContactDebtor:
    """One simulated debtor's true contact behaviour (what the guard should find)."""

    debtor_id: str
    shape: str
    timezone: str
    #: How the service learns the zone: ``preference`` or ``claim``.
    zone_source: str
    #: True answer probability per cell (16: weekday bands 0-7, then weekend bands 0-7).
    answer: tuple[float, ...]
    favourite: str
    #: Response probability per contact on each channel other than the call.
    respond: dict[str, float]
    #: Days after its assignment on which the debtor sets its preferences (``inf``: never).
    preference_day: float = math.inf
    inconvenient: tuple[tuple[int, int], ...] = ()
    opt_out: tuple[str, ...] = ()

    def answer_probability(self, ts: float) -> float:
        """The chance that a call placed at ``ts`` is answered."""
        local = local_datetime(ts, self.tz)
        return self.answer[cell_of(local.weekday(), local.hour)]

    @property
    def tz(self) -> ZoneInfo:
        found = zone(self.timezone)
        assert found is not None
        return found

    def true_best_band(self, *, weekend: bool, allowed: HourMask) -> int:
        """The band (0-7) with the highest true answer probability among those with an allowed
        hour (ties: the earlier band, as :func:`streams.answer_rates.best_band` breaks them)."""
        base = _BANDS if weekend else 0
        bands = [band for band in range(_BANDS) if any(allowed.allowed[band * BAND_HOURS : (band + 1) * BAND_HOURS])]
        if not bands:
            raise ValueError("no allowed hour")
        return max(bands, key=lambda band: (self.answer[base + band], -band))


def draw_debtors(shape: str, debtors: int, seed: int, *, preference_share: float = 0.15, prefix: str = "") -> list[ContactDebtor]:
    """``debtors`` simulated debtors of a portfolio ``shape`` (one of :data:`SHAPES` or ``mixed``).

    ``preference_share`` of them set preferences during their plan (half inconvenient hours,
    half an opt-out of SMS or e-mail).
    """
    if shape not in SHAPES and shape != "mixed":
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join((*SHAPES, 'mixed'))}")
    rng = random.Random(f"contact-debtors\x00{shape}\x00{seed}")
    zones, zone_weights = list(ZONES), list(ZONES.values())
    favourites, favourite_weights = list(_FAVOURITES), list(_FAVOURITES.values())
    out = []
    for n in range(debtors):
        own = rng.choice(SHAPES) if shape == "mixed" else shape
        favourite = rng.choices(favourites, favourite_weights)[0]
        # The debtor's answer level: 0.31 on average, more for those who like the phone.
        level = rng.betavariate(2.5, 5.5) * (1.4 if favourite == "call" else 0.6)
        answer = _answer_profile(own, level, rng)
        respond = {channel: rng.uniform(0.02, 0.08) for channel in ("email", "sms", "whatsapp", "visit")}
        respond["letter"] = rng.uniform(0.01, 0.04)
        if favourite != "call":
            respond[favourite] = rng.uniform(0.30, 0.50)
        preference_day = math.inf
        inconvenient: tuple[tuple[int, int], ...] = ()
        opt_out: tuple[str, ...] = ()
        if rng.random() < preference_share:
            preference_day = rng.uniform(5.0, 30.0)
            if rng.random() < 0.5:
                # Inconvenient: the weekday band it answers least in (it does not answer then anyway).
                worst = min(range(3, 7), key=lambda band: answer[band])
                inconvenient = ((worst * BAND_HOURS, (worst + 1) * BAND_HOURS),)
            else:
                opt_out = (rng.choice(("sms", "email")),)
        out.append(
            ContactDebtor(
                debtor_id=f"{prefix}c{seed}-{n}",
                shape=own,
                timezone=rng.choices(zones, zone_weights)[0],
                zone_source=rng.choice(("preference", "claim")),
                answer=answer,
                favourite=favourite,
                respond=respond,
                preference_day=preference_day,
                inconvenient=inconvenient,
                opt_out=opt_out,
            )
        )
    return out


def _answer_profile(shape: str, level: float, rng: random.Random) -> tuple[float, ...]:
    """16 answer probabilities: ``level`` scaled by a relative profile per band (0 = poor, 1 = good)."""
    low, high = 0.35 * level, min(0.9, 1.9 * level)

    def peak(good: tuple[int, ...], medium: tuple[int, ...] = (), second: float = 0.45) -> list[float]:
        return [1.0 if band in good else second if band in medium else 0.0 for band in range(_BANDS)]

    day_bands = (2, 3, 4, 5, 6)
    if shape == "peaked":
        good = rng.choices(day_bands, (0.10, 0.20, 0.15, 0.20, 0.35))[0]
        weekend_good = good if rng.random() < 0.7 else rng.choice(day_bands)
        weekday, weekend = peak((good,)), peak((weekend_good,))
    elif shape == "bimodal":
        # Two good bands, one better: before work and after it, or late morning and late afternoon.
        first, second = rng.choice(((2, 6), (6, 2), (3, 6), (6, 3), (3, 5), (5, 3)))
        weekday = weekend = peak((first,), (second,), second=0.75)
    elif shape == "flat":
        weekday = [0.5] * _BANDS
        weekend = [0.5] * _BANDS
    elif shape == "weekend_shift":
        weekday = peak((6,), (5,))
        weekend = peak((3,), (4,))
    elif shape == "workers_retirees":
        if rng.random() < 0.6:  # a worker: before and after work, at home in the weekend's day
            weekday, weekend = peak((6,), (2,)), peak((4,), (3, 5))
        else:  # a retiree: mornings and early afternoons, every day
            weekday = weekend = peak((3,), (4,))
    else:  # pragma: no cover - draw_debtors checks the shape
        raise ValueError(shape)
    # Each debtor's own deviations (so no two bands tie, and no portfolio is textbook-clean).
    noise = 0.04 if shape == "flat" else 0.10
    cells = []
    for profile in (weekday, weekend):
        for band, relative in enumerate(profile):
            if band not in day_bands and band != 7:
                cells.append(_NIGHT)
                continue
            value = low + (high - low) * min(1.0, max(0.0, relative + rng.gauss(0.0, noise)))
            cells.append(round(min(0.95, max(0.01, value)), 4))
    return tuple(cells)
