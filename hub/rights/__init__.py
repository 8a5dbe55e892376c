"""The patient's AVG (GDPR) rights over what the hub holds about them.

- access (art. 15): Patient/[id]/$avg-export, everything in one Bundle (export.py);
- rectification (art. 16): ordinary updates by the data holder, audited like every write;
- erasure (art. 17): Patient/[id]/$avg-erase, refused while a retention rule applies (erasure.py);
- restriction (art. 18): a deny-all patient-privacy Consent (consent/), which the patient's app writes.
"""
