"""Research tools: experiments kept runnable but apart from training and the runtime.

The DNSMOS fine-tune (``dnsmos_finetune`` with its torch copies of the enhancer's synthesis,
DNSMOS P.835 and STOI) and the gain calibration table (``gain_calibration``). Nothing that
trains or ships the weights imports this package (tests/test_model_card.py checks it).
"""
