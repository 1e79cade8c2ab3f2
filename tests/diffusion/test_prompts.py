"""Prompt CSVs in their published layouts (schemas.md §4 and §6), written by the test."""

from __future__ import annotations

import pytest

from obliviate.core.errors import ConfigError
from obliviate.diffusion.prompts import load_prompt_csv, with_category

I2P = (
    "prompt,categories,hard,inappropriate_percentage,nudity_percentage,q16_percentage,"
    "sd_safety_percentage,prompt_toxicity,lexica_url,sd_seed,sd_guidance_scale,"
    "sd_image_width,sd_image_height,sd_model\n"
    '"a gloomy alley, oil painting","shocking, violence",1,60.0,0.0,50.0,10.0,0.12,'
    "https://lexica.art/prompt/xxxx,1234,7,512,512,stable-diffusion-v1-4\n"
    "42,sexual,0,10.0,80.0,0.0,0.0,0.3,https://lexica.art/prompt/y,77,8,512,512,sd\n")
NUDITY = (  # Diffusion-MU-Attack prompts/nudity.csv
    "Unnamed: 0,prompt,categories,hard,inappropriate_percentage,nudity_percentage,"
    "q16_percentage,sd_safety_percentage,prompt_toxicity,lexica_url,evaluation_seed,"
    "evaluation_guidance,sd_image_width,sd_image_height,sd_model,case_number\n"
    "0,a figure study,sexual,1,70.0,90.0,20.0,50.0,0.2,https://lexica.art/prompt/z,"
    "2942,7,512,512,stable-diffusion-v1-4,21\n")
OBJECT = ("case_number,prompt,evaluation_seed,evaluation_guidance\n"
          "0,A red tench on a pier.,4242,7.5\n")
ESD = ',case_number,prompt,evaluation_seed,class\n0,0,Image of parachute,777,parachute\n'
COCO = "case_number,source,prompt,evaluation_seed\n000000000139,coco-30k,A living room.,55\n"


@pytest.fixture
def write(tmp_path):
    def go(name: str, text: str):
        path = tmp_path / name
        path.write_text(text)
        return load_prompt_csv(path)
    return go


def test_i2p_reads_seed_guidance_categories_and_numeric_prompts(write):
    cases = write("i2p_benchmark.csv", I2P)
    assert [c.case_number for c in cases] == ["0", "1"]  # no case_number: the row index
    first, second = cases
    assert first.prompt == "a gloomy alley, oil painting" and first.seed == 1234
    assert first.guidance == 7.0 and first.categories == ("shocking", "violence")
    assert first.hard is True and second.prompt == "42" and second.hard is False
    assert with_category(cases, "sexual") == [second]


def test_unlearndiffatk_files_use_the_evaluation_columns(write):
    (nude,) = write("nudity.csv", NUDITY)
    assert (nude.case_number, nude.seed, nude.guidance) == ("21", 2942, 7.0)
    assert nude.categories == ("sexual",)
    (fish,) = write("tench.csv", OBJECT)
    assert (fish.prompt, fish.seed, fish.guidance) == ("A red tench on a pier.", 4242, 7.5)


def test_esd_and_coco_files_keep_their_concept_and_padded_ids(write):
    (chute,) = write("small_imagenet_prompts.csv", ESD)
    assert chute.concept == "parachute" and chute.seed == 777 and chute.guidance == 7.5
    (coco,) = write("coco_10k.csv", COCO)
    assert coco.case_number == "000000000139" and coco.concept is None


def test_a_file_without_prompts_is_one_line(write, tmp_path):
    with pytest.raises(ConfigError, match="no 'prompt' column"):
        write("bad.csv", "case_number,text\n0,hello\n")
    with pytest.raises(ConfigError, match="row 2: seed 'x'"):
        write("bad2.csv", "prompt,evaluation_seed\nhi,x\n")
